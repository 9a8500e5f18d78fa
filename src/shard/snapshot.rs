//! Applying cluster metadata on a shard: the controller on shard 0 publishes each new
//! [`ClusterSnapshot`] to every shard and waits until all have applied it; applying opens
//! the partitions the snapshot gives this shard, closes or deletes the ones it takes away,
//! and passes config changes to the open logs.

use std::collections::HashSet;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;

use super::mesh::MeshRequest;
use super::{Partition, Shard};
use crate::cluster::{ClusterSnapshot, ShardId};
use crate::storage::PartitionLog;

impl Shard {
    /// Applies a snapshot here and on every other shard; returns when all have applied it.
    pub(super) async fn publish(self: &Rc<Self>, snapshot: Arc<ClusterSnapshot>) {
        let shard_count = snapshot.shard_count;
        let mut remote = Vec::new();
        for k in 0..shard_count {
            let to = ShardId(k as u16);
            if to == self.id {
                continue;
            }
            let shard = self.clone();
            let snapshot = snapshot.clone();
            remote.push(glommio::spawn_local(async move {
                if let Err(err) = shard
                    .mesh
                    .request(to, MeshRequest::ApplySnapshot(snapshot))
                    .await
                {
                    tracing::error!(shard = to.0, ?err, "metadata snapshot not applied");
                }
            }));
        }
        self.apply_snapshot(snapshot).await;
        for task in remote {
            task.await;
        }
    }

    /// Opens the partitions this snapshot gives us, drops the ones it takes away.
    pub async fn apply_snapshot(self: &Rc<Self>, snapshot: Arc<ClusterSnapshot>) {
        let current = self.snapshot();
        if current.version >= snapshot.version && current.version != 0 {
            return;
        }
        let owned = snapshot.partitions_of(self.id);
        let wanted: HashSet<(String, i32)> =
            owned.iter().map(|(t, p)| (t.name.clone(), *p)).collect();

        // Drop partitions of deleted (or re-created) topics first, so a re-created topic
        // starts from an empty directory.
        let mut removed = Vec::new();
        {
            let mut partitions = self.partitions.borrow_mut();
            for (topic, by_index) in partitions.iter_mut() {
                let live_id = snapshot.topic(topic).map(|t| t.id);
                by_index.retain(|index, p| {
                    let keep =
                        wanted.contains(&(topic.clone(), *index)) && live_id == Some(p.topic.id);
                    if !keep {
                        removed.push(p.clone());
                    }
                    keep
                });
            }
            partitions.retain(|_, m| !m.is_empty());
        }
        for partition in removed {
            partition.removed.set(true);
            partition.durable.notify_all();
            let dir = self.partition_dir(&partition.topic.name, partition.index);
            let deleted =
                snapshot.topic(&partition.topic.name).map(|t| t.id) != Some(partition.topic.id);
            if deleted {
                remove_partition_dir(dir, partition.topic.id).await;
            } else {
                // Moved to another shard (shard count changed): close cleanly.
                let job = partition.log.borrow_mut().close_job();
                if let Some(job) = job {
                    if let Err(err) = job.run().await {
                        tracing::warn!(%err, "closing a moved partition failed");
                    }
                }
            }
        }

        for (topic, index) in owned {
            if self.partition(&topic.name, index).is_some() {
                continue;
            }
            let dir = self.partition_dir(&topic.name, index);
            if let Err(err) = prepare_partition_dir(&dir, topic.id).await {
                tracing::error!(topic = %topic.name, partition = index, %err, "cannot prepare partition directory");
                continue;
            }
            match PartitionLog::open_in(&dir, self.log_config(&topic), self.segment_files.clone())
                .await
            {
                Ok(log) => {
                    tracing::debug!(topic = %topic.name, partition = index, shard = self.id.0, "partition opened");
                    let partition = Rc::new(Partition::new(topic.clone(), index, log));
                    self.partitions
                        .borrow_mut()
                        .entry(topic.name.clone())
                        .or_default()
                        .insert(index, partition);
                }
                Err(err) => {
                    tracing::error!(topic = %topic.name, partition = index, %err, "cannot open partition log");
                }
            }
        }
        // Config changes reach the open partitions of the topic.
        for partition in self.all_partitions() {
            if let Some(topic) = snapshot.topic(&partition.topic.name) {
                let wanted = self.log_config(topic);
                let mut log = partition.log.borrow_mut();
                if *log.config() != wanted {
                    log.set_config(wanted);
                }
            }
        }
        *self.snapshot.borrow_mut() = snapshot;
        self.snapshot_changed.notify_all();
        // Waiters on removed partitions re-check.
        self.flushed.notify_all();
    }
}

/// Marks a partition directory with its topic id; a directory left by a deleted topic of
/// the same name (a crash between the delete and the cleanup) is removed first.
async fn prepare_partition_dir(dir: &std::path::Path, topic_id: uuid::Uuid) -> std::io::Result<()> {
    let dir = dir.to_path_buf();
    glommio::executor()
        .spawn_blocking(move || {
            let marker = dir.join(PARTITION_MARKER);
            let expected = format!("topic_id: {topic_id}\n");
            if dir.exists() {
                match std::fs::read_to_string(&marker) {
                    Ok(found) if found == expected => return Ok(()),
                    Ok(found) => {
                        tracing::warn!(dir = %dir.display(), found = found.trim(), "partition directory belongs to an older topic of the same name; removing it");
                        std::fs::remove_dir_all(&dir)?;
                    }
                    Err(_) => {}
                }
            }
            std::fs::create_dir_all(&dir)?;
            let tmp = dir.join(format!("{PARTITION_MARKER}.tmp"));
            std::fs::write(&tmp, expected)?;
            std::fs::File::open(&tmp)?.sync_all()?;
            std::fs::rename(&tmp, &marker)?;
            crate::storage::record_file::sync_dir(&dir)?;
            if let Some(parent) = dir.parent() {
                crate::storage::record_file::sync_dir(parent)?;
            }
            Ok(())
        })
        .await
}

/// File in each partition directory naming the topic id it belongs to.
pub const PARTITION_MARKER: &str = "partition.metadata";

/// Suffix of directories being deleted.
pub const DELETE_SUFFIX: &str = "-delete";

async fn remove_partition_dir(dir: PathBuf, topic_id: uuid::Uuid) {
    glommio::executor()
        .spawn_blocking(move || {
            let Some(name) = dir.file_name().map(|n| n.to_string_lossy().into_owned()) else {
                return;
            };
            let doomed = dir.with_file_name(format!("{name}.{}{DELETE_SUFFIX}", topic_id.simple()));
            if let Err(err) = std::fs::rename(&dir, &doomed) {
                tracing::warn!(dir = %dir.display(), %err, "cannot rename deleted partition");
                return;
            }
            if let Err(err) = std::fs::remove_dir_all(&doomed) {
                tracing::warn!(dir = %doomed.display(), %err, "cannot remove deleted partition");
            }
        })
        .await
}
