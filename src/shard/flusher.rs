//! Group commit, the shard's side: the flusher task hands every dirty partition's pending
//! bytes to a flush job (one write and, by the topic's schedule, one `fdatasync` per dirty
//! segment, however many produce requests arrived meanwhile). Jobs of different
//! partitions run concurrently, and each partition may have two in flight: the second
//! writes while the first syncs (see [`crate::storage::log::FlushLink`]). A completed job
//! wakes only the waiters of its own partition (and long-polling fetches). A partition
//! whose write fails is reopened from what is durable ([`Shard::revive`]); closing the
//! shard waits for the last flush.

use std::rc::Rc;
use std::time::{Duration, Instant};

use super::{Partition, Shard};
use crate::storage::log::FlushJob;
use crate::storage::PartitionLog;

impl Shard {
    /// Waits until `last_offset` is below the high watermark (durable, or written for a
    /// topic that defers syncs); returns the error code for the client. Woken only when
    /// this partition's high watermark moves (or it fails, is reopened or removed).
    pub async fn wait_durable(
        &self,
        partition: &Partition,
        last_offset: i64,
        incarnation: u64,
        deadline: Instant,
    ) -> i16 {
        loop {
            let seen = partition.durable.generation();
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
            let _ = crate::util::timeout(deadline - now, partition.durable.wait(seen)).await;
        }
    }

    /// Waits until a replicated partition commits the entry at `index` with `term` (with
    /// `leader_only`, an acks=1 answer: until it is durable in this leader's log);
    /// returns the error code for the client: NONE once committed with its term (also
    /// when a successor committed it), NOT_LEADER_OR_FOLLOWER once another leader's
    /// entry took its place, REQUEST_TIMED_OUT while its fate is unknown at `deadline`.
    pub async fn wait_committed(
        &self,
        partition: &Partition,
        index: u64,
        term: u64,
        leader_only: bool,
        deadline: Instant,
    ) -> i16 {
        use crate::protocol::errors::*;
        let Some(group) = &partition.group else {
            return UNKNOWN_SERVER_ERROR;
        };
        loop {
            let seen = partition.durable.generation();
            let done = if leader_only {
                group.persisted_with(index, term)
            } else {
                group.committed_with(index, term)
            };
            match done {
                Some(true) => return NONE,
                Some(false) => return NOT_LEADER_OR_FOLLOWER,
                None => {}
            }
            if partition.removed.get() {
                return UNKNOWN_TOPIC_OR_PARTITION;
            }
            if group.is_stopping() {
                return NOT_LEADER_OR_FOLLOWER;
            }
            // Leadership may have moved on (a later term, or this leader stepped down for
            // lack of a quorum), yet the entry's fate is still open: a successor that has
            // it commits it. The answer waits until this replica learns which (the
            // entry committed with its term, or replaced), or the request's timeout
            // (REQUEST_TIMED_OUT: possibly persisted). Answering NOT_LEADER_OR_FOLLOWER
            // early would tell the client "not persisted" of a record that may be, and a
            // producer that then bumps its epoch resends it as a new one.
            let now = Instant::now();
            if now >= deadline {
                return REQUEST_TIMED_OUT;
            }
            let _ = crate::util::timeout(deadline - now, partition.durable.wait(seen)).await;
        }
    }

    /// The group-commit loop: hands every dirty partition's pending batches to a flush
    /// job of its own. A partition has up to [`crate::storage::log::FLUSHES_IN_FLIGHT_MAX`] jobs in flight, so
    /// it keeps writing while a sync runs; one that has the maximum is taken up again
    /// when its oldest job completes.
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
                let now_ms = crate::util::now_ms();
                for partition in dirty {
                    partition.queued_for_flush.set(false);
                    let job = partition.log.borrow_mut().take_flush(now_ms);
                    if let Some(job) = job {
                        shard.start_flush(partition, job);
                    }
                }
                // Let the jobs just started issue their writes before taking more.
                glommio::yield_if_needed().await;
            }
        })
        .detach();
    }

    /// Runs one flush job and applies it; wakes the partition's waiters.
    fn start_flush(self: &Rc<Self>, partition: Rc<Partition>, job: FlushJob) {
        let shard = self.clone();
        let bytes = job.bytes();
        let link = job.link();
        let incarnation = partition.incarnation.get();
        glommio::spawn_local(async move {
            let started = Instant::now();
            let result = job.run().await;
            shard.metrics.flush(started.elapsed(), bytes);
            // Written or dropped (a failed write is never acknowledged): either way these
            // bytes no longer wait in memory.
            shard.unflushed_bytes.set(shard.unflushed_bytes.get().saturating_sub(bytes));
            let failed = result.is_err();
            if let Err(err) = &result {
                tracing::error!(topic = %partition.topic.name, partition = partition.index, %err, "flush failed; partition is offline for writes until it is reopened");
            }
            if partition.incarnation.get() == incarnation {
                let mut log = partition.log.borrow_mut();
                let dropped = log.complete_flush(result);
                let again = log.has_pending();
                let sync_at = log.sync_due_at_ms();
                drop(log);
                shard
                    .unflushed_bytes
                    .set(shard.unflushed_bytes.get().saturating_sub(dropped));
                if again {
                    shard.mark_dirty(&partition);
                }
                if let Some(at) = sync_at {
                    shard.sync_when_due(&partition, at);
                }
            } else {
                // The log was reopened meanwhile: `complete_flush` will not finish this
                // job, so a job taken after it must not wait for that.
                link.finish(!failed);
            }
            partition.durable.notify_all();
            shard.flushed.notify_all();
            if failed {
                shard.revive(partition);
            }
        })
        .detach();
    }

    /// A topic that defers syncs (`flush.ms`): queues the partition for a flush when its
    /// oldest unsynced message has waited `flush.ms`. One timer per partition at a time.
    fn sync_when_due(self: &Rc<Self>, partition: &Rc<Partition>, at_ms: i64) {
        if partition.sync_timer.replace(true) {
            return;
        }
        let shard = self.clone();
        let partition = partition.clone();
        glommio::spawn_local(async move {
            let wait = at_ms.saturating_sub(crate::util::now_ms()).max(0) as u64;
            let _ = shard
                .sleep_unless_shutdown(Duration::from_millis(wait))
                .await;
            partition.sync_timer.set(false);
            if !partition.removed.get() {
                shard.mark_dirty(&partition);
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
                if partition.log.borrow().flushes_in_flight() > 0 {
                    // A job taken after the failed one has not completed yet.
                    continue;
                }
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
                partition.durable.notify_all();
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
                .any(|p| p.group.is_none() && p.log.borrow().is_dirty());
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
        // A replicated log is made durable by its group's persist rounds and reopened as
        // after a crash, from its Raft state.
        for partition in all.into_iter().filter(|p| p.group.is_none()) {
            let job = partition.log.borrow_mut().close_job();
            if let Some(job) = job {
                if let Err(err) = job.run().await {
                    tracing::warn!(topic = %partition.topic.name, partition = partition.index, %err, "close failed");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake, Waker};
    use std::time::{Duration, Instant};

    use glommio::{LocalExecutorBuilder, Placement};

    use crate::cluster::{ShardId, TopicMeta};
    use crate::protocol::batch::testing::{TestBatch, TestRecord};
    use crate::protocol::batch::validate_produce_records;
    use crate::protocol::errors;
    use crate::shard::{test_shard, Partition};
    use crate::storage::{LogConfig, PartitionLog};

    /// Counts the wake-ups of the future it is polled with.
    #[derive(Default)]
    struct CountingWaker(AtomicUsize);

    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    async fn partition(dir: &std::path::Path, topic: &str) -> std::rc::Rc<Partition> {
        let log_dir = dir.join(format!("{topic}-0"));
        std::fs::create_dir_all(&log_dir).unwrap();
        let log = PartitionLog::open(&log_dir, LogConfig::default())
            .await
            .unwrap();
        let meta = std::rc::Rc::new(TopicMeta {
            name: topic.into(),
            id: uuid::Uuid::new_v4(),
            partitions: vec![ShardId(0)],
            configs: Default::default(),
            replicas: Vec::new(),
            leaders: Vec::new(),
            isr: Vec::new(),
            token: None,
        });
        std::rc::Rc::new(Partition::new(meta, 0, log))
    }

    /// Appends one record and hands it to the flusher; returns its offset.
    fn produce(shard: &crate::shard::Shard, p: &std::rc::Rc<Partition>) -> i64 {
        let batch = TestBatch {
            records: vec![TestRecord::value(b"v")],
            ..Default::default()
        }
        .encode();
        let info = validate_produce_records(&batch, 1 << 20).unwrap();
        let outcome = p.log.borrow_mut().append(&batch, &info, 0).unwrap();
        shard.mark_dirty(p);
        match outcome {
            crate::storage::AppendOutcome::Appended { last_offset, .. } => last_offset,
            other => panic!("unexpected {other:?}"),
        }
    }

    /// A produce waiting on one partition is not woken by the flushes of another: counted
    /// wake-ups of its future, no clock involved.
    #[test]
    fn a_flush_wakes_only_the_waiters_of_its_partition() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        LocalExecutorBuilder::new(Placement::Unbound)
            .io_memory(256 * 1024)
            .spawn(move || async move {
                crate::storage::warm_up_io(&path).await.unwrap();
                let shard = test_shard(&path).await;
                shard.spawn_flusher();
                let quiet = partition(&path, "quiet").await;
                let busy = partition(&path, "busy").await;
                let deadline = Instant::now() + Duration::from_secs(600);

                // Waits for offset 0 of `quiet`, which nothing has produced yet.
                let mut waiter = Box::pin(shard.wait_durable(&quiet, 0, 0, deadline));
                let wakes = Arc::new(CountingWaker::default());
                let waker = Waker::from(wakes.clone());
                let mut cx = Context::from_waker(&waker);
                assert!(waiter.as_mut().poll(&mut cx).is_pending());

                for _ in 0..5 {
                    let offset = produce(&shard, &busy);
                    let code = shard.wait_durable(&busy, offset, 0, deadline).await;
                    assert_eq!(code, errors::NONE);
                }
                assert_eq!(busy.log.borrow().high_watermark(), 5);
                assert_eq!(
                    wakes.0.load(Ordering::SeqCst),
                    0,
                    "woken by another partition"
                );

                let offset = produce(&shard, &quiet);
                assert_eq!(
                    shard.wait_durable(&quiet, offset, 0, deadline).await,
                    errors::NONE
                );
                assert!(wakes.0.load(Ordering::SeqCst) >= 1);
                assert_eq!(waiter.as_mut().poll(&mut cx), Poll::Ready(errors::NONE));
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
