//! Retention and compaction on a shard: loops in a low-priority task queue, so request
//! handling and the flusher win the shard's CPU whenever both want it. Besides the
//! partitions' retention and compaction, one loop expires committed offsets and empty
//! groups and compacts the group log while running.

use std::rc::Rc;
use std::time::Duration;

use super::Shard;

/// How often the group log's growth is looked at (an O(1) check unless it grew past its
/// compaction threshold).
const GROUP_LOG_CHECK_MS: u64 = 1000;

/// Task-queue shares of retention and compaction (request handling has glommio's
/// default of 1000).
const MAINTENANCE_SHARES: usize = 50;

impl Shard {
    /// Starts retention and compaction: two loops in a low-priority task queue, so that
    /// request handling and the flusher win the shard's CPU whenever both want it. The
    /// byte-crunching of a compaction pass runs on a thread of its own at the lowest CPU
    /// priority, pinned like the shard (see [`crate::storage::compaction`]).
    pub fn spawn_maintenance(self: &Rc<Self>) {
        let queue = glommio::executor().create_task_queue(
            glommio::Shares::Static(MAINTENANCE_SHARES),
            glommio::Latency::NotImportant,
            "maintenance",
        );
        let shard = self.clone();
        let retention = async move {
            let every = Duration::from_millis(shard.config.log_retention_check_interval_ms.max(1));
            while shard.sleep_unless_shutdown(every).await {
                for partition in shard.all_partitions() {
                    let now = crate::util::now_ms();
                    if partition.group.is_some() {
                        // A replicated log counts the entries it removes (its Raft start
                        // moves past them); producer state is not expired by the clock
                        // here, as it must stay the same on every replica.
                        let scan = partition.log.borrow().plan_raft_retention(now);
                        let Some(scan) = scan else { continue };
                        let counted = scan.run().await;
                        let removal = partition
                            .log
                            .borrow_mut()
                            .complete_raft_retention(scan, counted);
                        if let Some(job) = removal {
                            if let Err(err) = job.run().await {
                                tracing::warn!(topic = %partition.topic.name, partition = partition.index, %err, "removing old segments failed");
                            }
                        }
                        continue;
                    }
                    partition.log.borrow_mut().expire_producers(now);
                    let outcome = partition.log.borrow_mut().enforce_retention(now);
                    if outcome.rolled {
                        shard.mark_dirty(&partition);
                    }
                    if let Some(job) = outcome.removal {
                        if let Err(err) = job.run().await {
                            tracing::warn!(topic = %partition.topic.name, partition = partition.index, %err, "removing old segments failed");
                        }
                    }
                }
            }
        };
        let shard = self.clone();
        let compaction = async move {
            let every = Duration::from_millis(shard.config.log_cleaner_backoff_ms.max(1));
            while shard.sleep_unless_shutdown(every).await {
                for partition in shard
                    .all_partitions()
                    .into_iter()
                    .filter(|p| p.group.is_none())
                {
                    let job = partition
                        .log
                        .borrow_mut()
                        .compaction_plan(crate::util::now_ms());
                    let Some(job) = job else { continue };
                    let result = job.run().await;
                    let removal = partition.log.borrow_mut().complete_compaction(result);
                    if let Some(job) = removal {
                        if let Err(err) = job.run().await {
                            tracing::warn!(topic = %partition.topic.name, partition = partition.index, %err, "removing emptied segments failed");
                        }
                    }
                }
            }
        };
        let shard = self.clone();
        let groups = async move {
            let retention_ms = shard.config.offsets_retention_ms.unwrap_or(
                shard
                    .config
                    .offsets_retention_minutes
                    .saturating_mul(60_000),
            );
            let check_every_ms = shard.config.offsets_retention_check_interval_ms.max(1);
            let every = Duration::from_millis(check_every_ms.min(GROUP_LOG_CHECK_MS));
            let mut last_expiry = std::time::Instant::now();
            // Members of the memberships loaded at start must heartbeat.
            shard.watch_members();
            while shard.sleep_unless_shutdown(every).await {
                if last_expiry.elapsed() >= Duration::from_millis(check_every_ms) {
                    last_expiry = std::time::Instant::now();
                    let now = crate::util::now_ms();
                    if let Err(err) = shard.groups.expire(now, retention_ms).await {
                        tracing::warn!(%err, "expiring committed offsets failed");
                    }
                }
                if let Err(err) = shard.groups.compact_if_due().await {
                    tracing::warn!(%err, "compacting the group log failed");
                }
            }
        };
        for task in [
            glommio::spawn_local_into(
                Box::pin(retention) as std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>,
                queue,
            ),
            glommio::spawn_local_into(Box::pin(compaction), queue),
            glommio::spawn_local_into(Box::pin(groups), queue),
        ] {
            match task {
                Ok(task) => {
                    task.detach();
                }
                Err(err) => tracing::error!(?err, "cannot start retention and compaction"),
            }
        }
    }

    /// Sleeps; false once the shard is shutting down.
    pub(super) async fn sleep_unless_shutdown(&self, every: Duration) -> bool {
        if self.shutting_down.get() {
            return false;
        }
        let seen = self.shutdown.generation();
        let _ = crate::util::timeout(every, self.shutdown.wait(seen)).await;
        !self.shutting_down.get()
    }
}
