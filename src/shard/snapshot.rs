//! Applying cluster metadata on a shard: the controller on shard 0 publishes each new
//! [`PublishedSnapshot`] to every shard and waits until all have applied it; applying copies
//! it into the shard's own [`ClusterSnapshot`] (requests never touch memory another core
//! writes, not even a reference count), opens the partitions the snapshot gives this shard,
//! closes or deletes the ones it takes away, and passes config changes to the open logs.

use std::collections::HashSet;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;

use super::mesh::MeshRequest;
use super::{Partition, Shard};
use crate::cluster::controller::{ControlReply, ControlRequest};
use crate::cluster::{ClusterSnapshot, NodeId, PublishedSnapshot, ShardId, TopicMeta};
use crate::storage::PartitionLog;

impl Shard {
    /// Opens this node's replica of a replicated partition: its log and Raft state, a
    /// Raft group over them (the replicas' nodes are the voters), and the task that
    /// wakes waiting requests and reports this replica's leadership to the cluster.
    async fn open_replica(
        self: &Rc<Self>,
        topic: &Rc<TopicMeta>,
        index: i32,
        dir: &std::path::Path,
    ) -> std::io::Result<Rc<Partition>> {
        use super::raft_group::RaftGroup;
        use super::replica::{Replica, ReplicaTiming};
        let voters: Vec<u64> = topic
            .replicas_of(index)
            .iter()
            .map(|n| n.0 as u64)
            .collect();
        let node = self.node.0 as u64;
        let timing = ReplicaTiming {
            election_ticks: self.config.raft_election_ticks as usize,
            heartbeat_ticks: 1,
        };
        let replica = Replica::open(dir, self.log_config(topic), node, &voters, &timing).await?;
        let fresh = replica.term() == 0;
        let id = crate::cluster::partition_group(&topic.id, index);
        let group = RaftGroup::new(id, node, super::meta::raft_clock(&self.config), replica);
        if let Some(peers) = self.peers.borrow().clone() {
            group.set_transport(peers);
        }
        self.raft_groups.borrow_mut().insert(id, group.clone());
        group.spawn_driver();
        // The preferred (first) replica of a new partition stands at once.
        if fresh && voters.first() == Some(&node) {
            group.campaign();
            glommio::spawn_local(super::leaders::stand_as_preferred(group.clone())).detach();
        } else if fresh {
            // Its votes may go out before the others have created the partition: the
            // others hold their own first timeout back for two election timeouts, so
            // that the preferred replica's second try comes first.
            group.hold_first_election(2 * self.config.raft_election_ticks);
        }
        let partition = Rc::new(Partition::replicated(topic.clone(), index, group));
        glommio::spawn_local(watch_replica(self.clone(), partition.clone())).detach();
        tracing::debug!(topic = %topic.name, partition = index, group = id, ?voters, "replica opened");
        Ok(partition)
    }

    fn insert_partition(self: &Rc<Self>, partition: Rc<Partition>) {
        if partition.topic.name == crate::coordinator::OFFSETS_TOPIC && self.groups.is_replicated()
        {
            glommio::spawn_local(super::offsets::coordinate(self.clone(), partition.clone()))
                .detach();
        }
        self.partitions
            .borrow_mut()
            .entry(partition.topic.name.clone())
            .or_default()
            .insert(partition.index, partition);
    }

    /// Applies a snapshot here and on every other shard; returns when all have applied it.
    pub(super) async fn publish(self: &Rc<Self>, snapshot: Arc<PublishedSnapshot>) {
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

    /// Copies the published snapshot into this shard's memory, opens the partitions it
    /// gives us, drops the ones it takes away. Nothing of `published` is kept: requests
    /// read only the copy.
    pub async fn apply_snapshot(self: &Rc<Self>, published: Arc<PublishedSnapshot>) {
        let current = self.snapshot();
        if current.version >= published.version && current.version != 0 {
            return;
        }
        let snapshot = Rc::new(ClusterSnapshot::copy_of(&published, &current));
        drop(published);
        drop(current);
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
            if let Some(group) = &partition.group {
                group.stop().await;
                self.raft_groups.borrow_mut().remove(&group.id);
            }
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
            if topic.is_replicated(index) {
                match self.open_replica(&topic, index, &dir).await {
                    Ok(partition) => self.insert_partition(partition),
                    Err(err) => {
                        tracing::error!(topic = %topic.name, partition = index, %err, "cannot open partition replica");
                    }
                }
                continue;
            }
            match PartitionLog::open_in(&dir, self.log_config(&topic), self.segment_files.clone())
                .await
            {
                Ok(log) => {
                    tracing::debug!(topic = %topic.name, partition = index, shard = self.id.0, "partition opened");
                    self.insert_partition(Rc::new(Partition::new(topic.clone(), index, log)));
                }
                Err(err) => {
                    tracing::error!(topic = %topic.name, partition = index, %err, "cannot open partition log");
                }
            }
        }
        // Config changes reach the open partitions of the topic, replicated ones too
        // (retention and compaction do not run on those: maintenance skips them).
        for partition in self.all_partitions() {
            let Some(topic) = snapshot.topic(&partition.topic.name) else {
                continue;
            };
            let t =
                crate::cluster::topic_config::TopicConfig::resolve(&self.config, &topic.configs);
            partition.min_insync.set(t.min_insync_replicas);
            let mut wanted = self.log_config(topic);
            let mut log = partition.log.borrow_mut();
            wanted.replicated = log.config().replicated;
            if *log.config() != wanted {
                log.set_config(wanted);
            }
        }
        *self.snapshot.borrow_mut() = snapshot;
        self.snapshot_changed.notify_all();
        // Waiters on removed partitions re-check.
        self.flushed.notify_all();
    }
}

/// Follows a replica's group: wakes the requests waiting on the partition when its high
/// watermark or leadership moves, and reports each term this replica leads, and each
/// change of its in-sync replicas then, to the metadata, which tells clients (retried
/// until recorded, or the term has passed).
async fn watch_replica(shard: Rc<Shard>, partition: Rc<Partition>) {
    let Some(group) = partition.group.clone() else {
        return;
    };
    let node = shard.node.0 as u64;
    let mut reported = (0u64, Vec::new());
    let mut led = false;
    while !group.is_stopping() && !partition.removed.get() {
        let seen = group.changed.generation();
        partition.durable.notify_all();
        let term = group.term();
        let leading = group.leader() == node && group.is_leader();
        if leading && !led {
            shard.metrics.leader_elected();
        }
        led = leading;
        let in_sync = if leading { group.in_sync() } else { Vec::new() };
        if leading && (term, &in_sync) != (reported.0, &reported.1) {
            let request = ControlRequest::PartitionLeader {
                topic: partition.topic.name.clone(),
                id: partition.topic.id,
                partition: partition.index,
                leader: shard.node,
                epoch: term,
                isr: Some(in_sync.iter().map(|&n| NodeId(n as i32)).collect()),
            };
            match shard.control(request).await {
                Ok(ControlReply::Results(r)) if r.first().is_some_and(|(c, _)| *c == 0) => {
                    reported = (term, in_sync);
                }
                other => {
                    tracing::debug!(topic = %partition.topic.name, partition = partition.index, reply = ?other, "leadership not recorded yet; retrying");
                    glommio::timer::sleep(std::time::Duration::from_millis(200)).await;
                    continue;
                }
            }
        }
        group.changed.wait(seen).await;
    }
    partition.durable.notify_all();
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use glommio::{LocalExecutorBuilder, Placement};

    use super::*;
    use crate::cluster::TopicMeta;

    fn topic(name: &str, configs: &[(&str, &str)]) -> Arc<TopicMeta> {
        Arc::new(TopicMeta {
            name: name.into(),
            id: uuid::Uuid::new_v4(),
            partitions: vec![ShardId(0)],
            configs: configs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            replicas: Vec::new(),
            leaders: Vec::new(),
            isr: Vec::new(),
            token: None,
        })
    }

    fn published(version: u64, topics: &[&Arc<TopicMeta>]) -> Arc<PublishedSnapshot> {
        Arc::new(PublishedSnapshot {
            version,
            cluster_id: "c".into(),
            shard_count: 1,
            topics: topics
                .iter()
                .map(|t| (t.name.clone(), Arc::clone(t)))
                .collect::<BTreeMap<_, _>>(),
            ..Default::default()
        })
    }

    /// What every request reads is the shard's own copy: applying a snapshot keeps no
    /// reference to the published one (its counts are what they were), the shard's
    /// partitions point into the copy, and a topic unchanged by a later version keeps its
    /// copy.
    #[test]
    fn applying_copies_the_published_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().to_path_buf();
        LocalExecutorBuilder::new(Placement::Unbound)
            .io_memory(256 * 1024)
            .spawn(move || async move {
                crate::storage::warm_up_io(&data_dir).await.unwrap();
                let shard = crate::shard::test_shard(&data_dir).await;

                let a = topic("a", &[]);
                let b = topic("b", &[]);
                let first = published(2, &[&a, &b]);
                shard.apply_snapshot(first.clone()).await;
                assert_eq!(Arc::strong_count(&first), 1);
                assert_eq!(Arc::strong_count(&a), 2, "held here and by `first` only");
                assert_eq!(Arc::strong_count(&b), 2, "held here and by `first` only");
                let copy = shard.snapshot();
                assert_eq!(copy.version, 2);
                assert_eq!(**copy.topic("a").unwrap(), *a);
                assert_eq!(copy.topic_by_id(&b.id).unwrap().name, "b");
                let partition = shard.owned_partition("a", 0).unwrap();
                assert!(Rc::ptr_eq(&partition.topic, copy.topic("a").unwrap()));

                // A config change of b: a keeps its copy, b gets a new one.
                let b2 = Arc::new(TopicMeta {
                    configs: [("retention.ms".to_string(), "1000".to_string())].into(),
                    ..TopicMeta::clone(&b)
                });
                let second = published(3, &[&a, &b2]);
                shard.apply_snapshot(second.clone()).await;
                assert_eq!(Arc::strong_count(&second), 1);
                assert_eq!(Arc::strong_count(&b2), 2, "held here and by `second` only");
                let newer = shard.snapshot();
                assert_eq!(newer.version, 3);
                assert!(Rc::ptr_eq(
                    newer.topic("a").unwrap(),
                    copy.topic("a").unwrap()
                ));
                assert!(!Rc::ptr_eq(
                    newer.topic("b").unwrap(),
                    copy.topic("b").unwrap()
                ));
                assert_eq!(**newer.topic("b").unwrap(), *b2);
                assert_eq!(
                    shard
                        .owned_partition("b", 0)
                        .unwrap()
                        .log
                        .borrow()
                        .config()
                        .retention_ms,
                    1000
                );
            })
            .unwrap()
            .join()
            .unwrap();
        drop(dir);
    }
}
