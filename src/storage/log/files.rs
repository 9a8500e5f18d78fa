//! The shard's cache of open sealed-segment files.
//!
//! A partition keeps only its active segment's file open. Sealed segments are opened on
//! demand — a cold read, a timestamp search — through this cache, which keeps at most
//! `capacity` of them open and closes the least recently used past it. One cache serves
//! every log of a shard (`Rc`/`RefCell`, never borrowed across an `.await`). A read plan
//! holds its own `Rc<DmaFile>`: closing an entry here only drops the cache's handle, so a
//! read in flight finishes on the file it started with and the descriptor is released
//! when the last handle goes.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::Path;
use std::rc::Rc;

use glommio::io::{DmaFile, OpenOptions};

/// Capacity of the cache a log opened on its own gets ([`super::PartitionLog::open`]);
/// a shard passes its own, sized from the open-file limit.
pub const SEGMENT_FILES_DEFAULT: usize = 64;

/// A segment file's key: the log's id in the cache, and the segment's base offset. Ids
/// are never reused, so a log recreated in the same directory never finds a handle to
/// the old (deleted) files.
pub(super) type FileKey = (u64, i64);

#[derive(Default)]
struct Inner {
    capacity: usize,
    tick: u64,
    next_log: u64,
    open: HashMap<FileKey, (Rc<DmaFile>, u64)>,
    /// Last use → key, oldest first.
    order: BTreeMap<u64, FileKey>,
    opened: u64,
    closed: u64,
}

/// A bounded LRU cache of open sealed-segment files; cloning shares it.
#[derive(Clone)]
pub struct SegmentFiles(Rc<RefCell<Inner>>);

impl SegmentFiles {
    pub fn new(capacity: usize) -> SegmentFiles {
        SegmentFiles(Rc::new(RefCell::new(Inner {
            capacity,
            ..Inner::default()
        })))
    }

    pub fn capacity(&self) -> usize {
        self.0.borrow().capacity
    }

    /// Files the cache holds open now.
    pub fn len(&self) -> usize {
        self.0.borrow().open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Files opened on demand, and closed for the budget, since start.
    pub fn counters(&self) -> (u64, u64) {
        let inner = self.0.borrow();
        (inner.opened, inner.closed)
    }

    /// A new id for a log's keys.
    pub(super) fn register_log(&self) -> u64 {
        let mut inner = self.0.borrow_mut();
        inner.next_log += 1;
        inner.next_log
    }

    /// The open file of `key`, if cached; marks it recently used.
    pub(super) fn get(&self, key: FileKey) -> Option<Rc<DmaFile>> {
        let mut inner = self.0.borrow_mut();
        inner.tick += 1;
        let tick = inner.tick;
        let (file, used) = inner.open.get_mut(&key)?;
        let file = file.clone();
        let old = std::mem::replace(used, tick);
        inner.order.remove(&old);
        inner.order.insert(tick, key);
        Some(file)
    }

    /// Caches `file` as `key` (replacing any handle it had), closing the least recently
    /// used files past the capacity.
    pub(super) fn insert(&self, key: FileKey, file: Rc<DmaFile>) {
        let evicted = {
            let mut inner = self.0.borrow_mut();
            inner.tick += 1;
            let tick = inner.tick;
            let mut evicted = Vec::new();
            if let Some((old, used)) = inner.open.insert(key, (file, tick)) {
                inner.order.remove(&used);
                evicted.push(old);
            }
            inner.order.insert(tick, key);
            while inner.open.len() > inner.capacity {
                let Some((_, oldest)) = inner.order.pop_first() else {
                    break;
                };
                if let Some((old, _)) = inner.open.remove(&oldest) {
                    inner.closed += 1;
                    evicted.push(old);
                }
            }
            evicted
        };
        // Dropped outside the borrow: a handle still held by a read stays open until that
        // read is done; the last handle's drop closes the descriptor.
        drop(evicted);
    }

    /// Takes `key`'s handle out of the cache (its segment is removed or rewritten).
    pub(super) fn remove(&self, key: FileKey) -> Option<Rc<DmaFile>> {
        let mut inner = self.0.borrow_mut();
        let (file, used) = inner.open.remove(&key)?;
        inner.order.remove(&used);
        Some(file)
    }

    /// The file of `key`, opened read-only from `path` if not cached.
    pub(super) async fn open(&self, key: FileKey, path: &Path) -> io::Result<Rc<DmaFile>> {
        if let Some(file) = self.get(key) {
            return Ok(file);
        }
        let file = Rc::new(OpenOptions::new().read(true).dma_open(path).await?);
        self.0.borrow_mut().opened += 1;
        self.insert(key, file.clone());
        Ok(file)
    }
}

/// A read plan's file: open already (the active segment, or a cached sealed one), or a
/// sealed segment to open through the cache when the read runs.
pub(super) enum FileRef {
    Open(Rc<DmaFile>),
    Cold { files: SegmentFiles, key: FileKey },
}

impl FileRef {
    pub(super) async fn get(&self, path: &Path) -> io::Result<Rc<DmaFile>> {
        match self {
            FileRef::Open(file) => Ok(file.clone()),
            FileRef::Cold { files, key } => files.open(*key, path).await,
        }
    }
}
