//! Read-ahead for consumers reading a segment from disk in order: when a fetch is served
//! from a segment file, the next chunk (from the first batch it did not serve) is read in
//! the background, and the partition's next fetch at exactly that offset starts from it
//! instead of waiting for the disk. Kafka gets the same from the page cache; Strand reads
//! with direct I/O and has no page cache to lean on.
//!
//! One slot per partition (a second reader of the same partition replaces it), keyed by
//! segment path and the offset the next fetch will ask for. The bytes read ahead lie below
//! the durable end the fetch was planned against, which never change while the segment is
//! in the log; compaction and retention, which replace or delete segments, clear the slot
//! ([`ReadAhead::invalidate`]). A slot serves one read, expires after
//! [`READ_AHEAD_EXPIRY`], and a shard holds at most [`READ_AHEAD_BYTES_PER_SHARD_MAX`] in
//! slots (past it, reads go without read-ahead).

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use glommio::io::{DmaFile, ReadResult};

/// Bytes a shard holds read ahead, at most (each shard is one thread).
pub const READ_AHEAD_BYTES_PER_SHARD_MAX: usize = 64 * 1024 * 1024;
/// A slot nobody read is dropped after this long.
pub const READ_AHEAD_EXPIRY: Duration = Duration::from_secs(2);

thread_local! {
    /// Bytes this shard holds in read-ahead slots or reads in flight.
    static HELD: Cell<usize> = const { Cell::new(0) };
}

/// Bytes held read ahead on this thread (shard), for tests and metrics.
pub fn held_bytes() -> usize {
    HELD.with(Cell::get)
}

fn release(bytes: usize) {
    HELD.with(|h| h.set(h.get().saturating_sub(bytes)));
}

/// A read started ahead: its result once done (`None` inside: it failed).
#[derive(Default)]
struct Pending {
    result: RefCell<Option<Option<ReadResult>>>,
    done: crate::util::Notify,
}

struct Slot {
    path: PathBuf,
    /// The offset the next fetch asks for; the chunk starts with the batch holding it,
    /// at `position` of the segment.
    offset: i64,
    position: u64,
    /// Bytes reserved against the shard's limit.
    size: usize,
    read: Rc<Pending>,
    generation: u64,
    id: u64,
}

impl Drop for Slot {
    fn drop(&mut self) {
        release(self.size);
    }
}

/// A partition's read-ahead slot; shared by the log and the reads it plans.
#[derive(Default)]
pub struct ReadAhead {
    slot: RefCell<Option<Slot>>,
    /// Bumped when segments are replaced or deleted: reads started before are dropped.
    generation: Cell<u64>,
    next_id: Cell<u64>,
    /// Reads served from a slot (for tests).
    hits: Cell<u64>,
}

impl ReadAhead {
    /// Segments were replaced or deleted: nothing read ahead before may be served.
    pub fn invalidate(&self) {
        self.generation.set(self.generation.get() + 1);
        self.slot.borrow_mut().take();
    }

    /// The offset a read ahead waits for, if one does.
    pub fn armed_for(&self) -> Option<i64> {
        self.slot.borrow().as_ref().map(|s| s.offset)
    }

    /// Reads a fetch took from a slot instead of the disk.
    pub fn hits(&self) -> u64 {
        self.hits.get()
    }

    /// The bytes read ahead for a fetch of `offset` from `path`, if any — waiting for the
    /// read if it is still running — and the position in the segment they start at. The
    /// slot is used up when it is for this segment.
    pub(super) async fn take(&self, path: &Path, offset: i64) -> Option<(u64, ReadResult)> {
        let taken = {
            let mut slot = self.slot.borrow_mut();
            if slot.as_ref()?.path != path {
                return None;
            }
            slot.take()?
        };
        if taken.offset != offset || taken.generation != self.generation.get() {
            return None;
        }
        loop {
            let seen = taken.read.done.generation();
            if let Some(result) = taken.read.result.borrow_mut().take() {
                let chunk = result?;
                if taken.generation != self.generation.get() {
                    return None;
                }
                self.hits.set(self.hits.get() + 1);
                return Some((taken.position, chunk));
            }
            taken.read.done.wait(seen).await;
        }
    }

    /// Reads `position..min(position + size, end)` of `file` in the background, for the
    /// fetch of `offset` that will follow.
    pub(super) fn start(
        self: &Rc<Self>,
        file: Rc<DmaFile>,
        path: PathBuf,
        position: u64,
        end: u64,
        size: usize,
        offset: i64,
    ) {
        if position >= end {
            return;
        }
        let size = (end - position).min(size as u64) as usize;
        let reserved = HELD.with(|h| {
            let held = h.get();
            if held + size > READ_AHEAD_BYTES_PER_SHARD_MAX {
                return false;
            }
            h.set(held + size);
            true
        });
        if !reserved {
            return;
        }
        let generation = self.generation.get();
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let read = Rc::new(Pending::default());
        *self.slot.borrow_mut() = Some(Slot {
            path,
            offset,
            position,
            size,
            read: read.clone(),
            generation,
            id,
        });
        let ahead = self.clone();
        glommio::spawn_local(async move {
            let chunk = file
                .read_at(position, size)
                .await
                .ok()
                .filter(|c| !c.is_empty());
            // The fetch that follows reads the disk itself if this failed, and reports.
            *read.result.borrow_mut() = Some(chunk);
            read.done.notify_all();
            drop(read);
            glommio::timer::sleep(READ_AHEAD_EXPIRY).await;
            let mut slot = ahead.slot.borrow_mut();
            if slot.as_ref().is_some_and(|s| s.id == id) {
                slot.take();
            }
        })
        .detach();
    }
}
