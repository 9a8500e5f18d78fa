//! Group commit, the shard's side: the flusher task takes every dirty partition's pending
//! bytes, writes and syncs them concurrently (one write and one `fdatasync` per dirty
//! segment per cycle, however many produce requests arrived meanwhile), then wakes
//! everything waiting on durability at once. A partition whose write fails is reopened
//! from what is durable ([`Shard::revive`]); closing the shard waits for the last flush.

use std::rc::Rc;
use std::time::{Duration, Instant};

use super::{Partition, Shard};
use crate::storage::PartitionLog;

impl Shard {
    /// Waits until `last_offset` is durable; returns the error code for the client.
    pub async fn wait_durable(
        &self,
        partition: &Partition,
        last_offset: i64,
        incarnation: u64,
        deadline: Instant,
    ) -> i16 {
        loop {
            let seen = self.flushed.generation();
            if partition.incarnation.get() != incarnation {
                // The log was reopened after a write failure: what this request appended was
                // dropped, and its offsets may now belong to other batches.
                return crate::protocol::errors::KAFKA_STORAGE_ERROR;
            }
            {
                let log = partition.log.borrow();
                if log.high_watermark() > last_offset {
                    return crate::protocol::errors::NONE;
                }
                if log.is_offline() {
                    return crate::protocol::errors::KAFKA_STORAGE_ERROR;
                }
            }
            if partition.removed.get() {
                return crate::protocol::errors::UNKNOWN_TOPIC_OR_PARTITION;
            }
            let now = Instant::now();
            if now >= deadline {
                return crate::protocol::errors::REQUEST_TIMED_OUT;
            }
            let _ = crate::util::timeout(deadline - now, self.flushed.wait(seen)).await;
        }
    }

    /// The group-commit loop: takes every dirty partition's pending bytes, writes and
    /// syncs them concurrently, then wakes everything waiting on durability at once.
    pub fn spawn_flusher(self: &Rc<Self>) {
        let shard = self.clone();
        glommio::spawn_local(async move {
            loop {
                let seen = shard.flush_wanted.generation();
                let dirty = std::mem::take(&mut *shard.dirty.borrow_mut());
                if dirty.is_empty() {
                    shard.flush_wanted.wait(seen).await;
                    continue;
                }
                let mut running = Vec::with_capacity(dirty.len());
                for partition in dirty {
                    partition.queued_for_flush.set(false);
                    let job = partition.log.borrow_mut().take_flush();
                    if let Some(job) = job {
                        let bytes = job.bytes();
                        running.push(glommio::spawn_local(async move {
                            let started = std::time::Instant::now();
                            let result = job.run().await;
                            (partition, result, bytes, started.elapsed())
                        }));
                    }
                }
                for task in running {
                    let (partition, result, bytes, took) = task.await;
                    shard.metrics.flush(took, bytes);
                    // Written or dropped (a failed write is never acknowledged): either
                    // way these bytes no longer wait in memory.
                    shard.unflushed_bytes.set(shard.unflushed_bytes.get().saturating_sub(bytes));
                    let failed = result.is_err();
                    if let Err(err) = &result {
                        tracing::error!(topic = %partition.topic.name, partition = partition.index, %err, "flush failed; partition is offline for writes until it is reopened");
                    }
                    let mut log = partition.log.borrow_mut();
                    let dropped = log.complete_flush(result);
                    let again = log.is_dirty();
                    drop(log);
                    shard
                        .unflushed_bytes
                        .set(shard.unflushed_bytes.get().saturating_sub(dropped));
                    if again {
                        shard.mark_dirty(&partition);
                    }
                    if failed {
                        shard.revive(partition);
                    }
                }
                shard.flushed.notify_all();
            }
        })
        .detach();
    }

    /// Reopens a partition whose log failed a write (a full disk, an I/O error), once a
    /// second from now and then every few seconds until it opens: recovery rebuilds the
    /// log and its producer state from what is on disk, dropping whatever was appended
    /// and never made durable, and the partition takes writes again. Meanwhile produce
    /// gets KAFKA_STORAGE_ERROR and fetches are served from the durable data.
    pub(super) fn revive(self: &Rc<Self>, partition: Rc<Partition>) {
        if partition.reviving.replace(true) {
            return;
        }
        let shard = self.clone();
        glommio::spawn_local(async move {
            let mut wait = Duration::from_secs(1);
            loop {
                if !shard.sleep_unless_shutdown(wait).await || partition.removed.get() {
                    break;
                }
                wait = (wait * 2).min(Duration::from_secs(10));
                let topic = match shard.snapshot().topic(&partition.topic.name) {
                    Some(topic) if topic.id == partition.topic.id => topic.clone(),
                    _ => break,
                };
                let dir = shard.partition_dir(&partition.topic.name, partition.index);
                let config = shard.log_config(&topic);
                let reopened = match PartitionLog::open_in(&dir, config, shard.segment_files.clone()).await {
                    Ok(log) => log,
                    Err(err) => {
                        tracing::warn!(topic = %partition.topic.name, partition = partition.index, %err, "cannot reopen the partition yet");
                        continue;
                    }
                };
                let old = std::mem::replace(&mut *partition.log.borrow_mut(), reopened);
                partition.incarnation.set(partition.incarnation.get() + 1);
                let mut old = old;
                if let Some(job) = old.close_job() {
                    let _ = job.run().await;
                }
                let hw = partition.log.borrow().high_watermark();
                tracing::info!(topic = %partition.topic.name, partition = partition.index, high_watermark = hw, "partition reopened; taking writes again");
                shard.flushed.notify_all();
                break;
            }
            partition.reviving.set(false);
        })
        .detach();
    }

    /// Waits until nothing is pending, then closes every log cleanly (indexes, snapshots,
    /// files trimmed to their logical length).
    pub async fn close_partitions(&self) {
        loop {
            let seen = self.flushed.generation();
            let pending = self
                .partitions
                .borrow()
                .values()
                .flat_map(|m| m.values())
                .any(|p| p.log.borrow().is_dirty());
            if !pending {
                break;
            }
            if crate::util::timeout(std::time::Duration::from_secs(10), self.flushed.wait(seen))
                .await
                .is_none()
            {
                tracing::warn!("gave up waiting for the last flush");
                break;
            }
        }
        let all: Vec<Rc<Partition>> = self
            .partitions
            .borrow()
            .values()
            .flat_map(|m| m.values().cloned())
            .collect();
        for partition in all {
            let job = partition.log.borrow_mut().close_job();
            if let Some(job) = job {
                if let Err(err) = job.run().await {
                    tracing::warn!(topic = %partition.topic.name, partition = partition.index, %err, "close failed");
                }
            }
        }
    }
}
