//! A shard: one pinned glommio executor and everything it owns.
//!
//! A shard owns a disjoint set of partitions (their logs, producer state and caches), its
//! listener on `base port + shard index`, its connections and a flusher task that group-
//! commits every partition with pending appends: one write and one `fdatasync` per dirty
//! segment per cycle, however many produce requests arrived meanwhile. State is `Rc` and
//! `RefCell`, never borrowed across an `.await`; other shards are reached only through the
//! [`mesh`]. Shard 0 additionally runs the [`Controller`].

pub mod mesh;
pub mod txn;

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::channels::local_channel::{self, LocalSender};
use glommio::channels::shared_channel::ConnectedReceiver;

use crate::cluster::controller::{ControlReply, ControlRequest, Controller};
use crate::cluster::topic_config::TopicConfig;
use crate::cluster::{broker_id, ClusterSnapshot, NodeId, ShardId, TopicMeta};
use crate::config::Config;
use crate::coordinator::txn::TxnCoordinator;
use crate::coordinator::GroupCoordinator;
use crate::storage::{LogConfig, PartitionLog};
use crate::util::Notify;
use mesh::{Mesh, MeshError, MeshMessage, MeshReply, MeshRequest};

/// Task-queue shares of retention and compaction (request handling has glommio's
/// default of 1000).
const MAINTENANCE_SHARES: usize = 50;

/// Control requests the controller queues before callers wait.
const CONTROLLER_QUEUE_CAPACITY: usize = 1024;

/// A partition owned by this shard.
pub struct Partition {
    pub topic: Arc<TopicMeta>,
    pub index: i32,
    pub log: RefCell<PartitionLog>,
    /// Queued in the shard's dirty list, waiting for the flusher.
    queued_for_flush: Cell<bool>,
    /// Set when the topic is deleted; waiters stop waiting.
    pub removed: Cell<bool>,
    /// Bumped each time the log is reopened after a write failure: a produce waiting on
    /// an older incarnation's batch must not take a newer batch's offsets for its own.
    pub incarnation: Cell<u64>,
    /// A reopen is scheduled.
    reviving: Cell<bool>,
}

type ControlJob = (
    ControlRequest,
    futures_channel::oneshot::Sender<ControlReply>,
);

pub struct Shard {
    pub id: ShardId,
    pub node: NodeId,
    pub config: Arc<Config>,
    pub mesh: Mesh,
    snapshot: RefCell<Arc<ClusterSnapshot>>,
    partitions: RefCell<HashMap<String, HashMap<i32, Rc<Partition>>>>,
    dirty: RefCell<Vec<Rc<Partition>>>,
    controller_queue: RefCell<Option<Rc<LocalSender<ControlJob>>>>,
    /// Appends are waiting for the flusher.
    pub flush_wanted: Notify,
    /// A flush cycle completed: durable offsets moved (produce acks, long-polling fetches).
    pub flushed: Notify,
    /// A new metadata snapshot was applied.
    pub snapshot_changed: Notify,
    pub shutting_down: Cell<bool>,
    pub shutdown: Notify,
    pub connections: Cell<usize>,
    pub connections_changed: Notify,
    /// Bytes appended and not yet handed back by a flush (see `--max-unflushed-bytes`).
    unflushed_bytes: Cell<usize>,
    /// The consumer groups this shard coordinates.
    pub groups: GroupCoordinator,
    /// The transactional ids this shard coordinates.
    pub txns: TxnCoordinator,
    pub metrics: crate::metrics::ShardMetrics,
}

impl Shard {
    pub fn new(
        id: ShardId,
        config: Arc<Config>,
        mesh: Mesh,
        groups: GroupCoordinator,
        txns: TxnCoordinator,
    ) -> Rc<Shard> {
        Rc::new(Shard {
            id,
            node: NodeId(0),
            config,
            mesh,
            snapshot: RefCell::new(Arc::new(ClusterSnapshot::default())),
            partitions: RefCell::new(HashMap::new()),
            dirty: RefCell::new(Vec::new()),
            controller_queue: RefCell::new(None),
            flush_wanted: Notify::default(),
            flushed: Notify::default(),
            snapshot_changed: Notify::default(),
            shutting_down: Cell::new(false),
            shutdown: Notify::default(),
            connections: Cell::new(0),
            connections_changed: Notify::default(),
            unflushed_bytes: Cell::new(0),
            groups,
            txns,
            metrics: crate::metrics::ShardMetrics::default(),
        })
    }

    pub fn snapshot(&self) -> Arc<ClusterSnapshot> {
        self.snapshot.borrow().clone()
    }

    pub fn broker_id(&self) -> i32 {
        broker_id(self.node, self.id)
    }

    pub fn partition(&self, topic: &str, index: i32) -> Option<Rc<Partition>> {
        self.partitions.borrow().get(topic)?.get(&index).cloned()
    }

    /// This shard's metrics now, for a scrape.
    pub fn metrics_snapshot(&self) -> crate::metrics::Snapshot {
        self.metrics.snapshot(
            self.id.0,
            crate::metrics::ShardGauges {
                connections: self.connections.get() as u64,
                partitions: self.partition_count() as u64,
                log_bytes: self
                    .all_partitions()
                    .iter()
                    .map(|p| p.log.borrow().size_bytes())
                    .sum(),
            },
        )
    }

    /// The partition `topic`/`index` if this shard owns it; otherwise the error a client
    /// that asked the wrong broker gets (UNKNOWN_TOPIC_OR_PARTITION, NOT_LEADER_OR_FOLLOWER,
    /// or KAFKA_STORAGE_ERROR while the log is not open).
    pub fn owned_partition(&self, topic: &str, index: i32) -> Result<Rc<Partition>, i16> {
        use crate::protocol::errors::*;
        let snapshot = self.snapshot();
        let meta = snapshot.topic(topic).ok_or(UNKNOWN_TOPIC_OR_PARTITION)?;
        match snapshot.owner(meta, index) {
            None => Err(UNKNOWN_TOPIC_OR_PARTITION),
            Some(owner) if owner != self.id => Err(NOT_LEADER_OR_FOLLOWER),
            Some(_) => self.partition(topic, index).ok_or(KAFKA_STORAGE_ERROR),
        }
    }

    /// Whether this shard coordinates the consumer group or transactional id `key`
    /// (FindCoordinator names the shard its hash picks).
    pub fn coordinates(&self, key: &str) -> bool {
        crate::coordinator::shard_of_group(key, self.snapshot().shard_count) == self.id
    }

    pub fn partition_count(&self) -> usize {
        self.partitions.borrow().values().map(|m| m.len()).sum()
    }

    /// Counts bytes appended to a log of this shard, until the flusher writes them.
    pub fn add_unflushed(&self, bytes: usize) {
        self.unflushed_bytes.set(self.unflushed_bytes.get() + bytes);
    }

    /// Waits while the shard holds more unflushed bytes than `--max-unflushed-bytes`.
    pub async fn wait_for_flush_room(&self) {
        while self.unflushed_bytes.get() > self.config.max_unflushed_bytes
            && !self.shutting_down.get()
        {
            let seen = self.flushed.generation();
            if self.unflushed_bytes.get() <= self.config.max_unflushed_bytes {
                break;
            }
            self.flushed.wait(seen).await;
        }
    }

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

    /// Tells the flusher that `partition` has pending appends.
    pub fn mark_dirty(&self, partition: &Rc<Partition>) {
        if !partition.queued_for_flush.replace(true) {
            self.dirty.borrow_mut().push(partition.clone());
            self.flush_wanted.notify_all();
        }
    }

    pub fn partition_dir(&self, topic: &str, index: i32) -> PathBuf {
        self.config.data_dir.join(format!("{topic}-{index}"))
    }

    /// A topic's log settings: its config overrides on top of the broker defaults.
    fn log_config(&self, topic: &TopicMeta) -> LogConfig {
        let t = TopicConfig::resolve(&self.config, &topic.configs);
        LogConfig {
            segment_bytes: t.segment_bytes,
            cache_bytes: self.config.partition_cache_bytes,
            max_message_bytes: t.max_message_bytes,
            segment_ms: t.segment_ms,
            retention_ms: t.retention_ms,
            retention_bytes: t.retention_bytes,
            delete: t.delete,
            compact: t.compact,
            min_compaction_lag_ms: t.min_compaction_lag_ms,
            delete_retention_ms: t.delete_retention_ms,
            log_append_time: t.log_append_time,
            ..LogConfig::default()
        }
    }

    /// Every partition this shard owns.
    pub fn all_partitions(&self) -> Vec<Rc<Partition>> {
        self.partitions
            .borrow()
            .values()
            .flat_map(|m| m.values().cloned())
            .collect()
    }

    /// Sends a request to the controller (locally on shard 0, over the mesh otherwise).
    pub async fn control(
        self: &Rc<Self>,
        request: ControlRequest,
    ) -> Result<ControlReply, MeshError> {
        if self.id == ShardId(0) {
            let sender = self.controller_queue.borrow().clone();
            let sender = sender.ok_or_else(|| MeshError("controller is not running".into()))?;
            let (tx, rx) = futures_channel::oneshot::channel();
            sender
                .send((request, tx))
                .await
                .map_err(|_| MeshError("controller is gone".into()))?;
            rx.await
                .map_err(|_| MeshError("controller dropped the request".into()))
        } else {
            match self
                .mesh
                .request(ShardId(0), MeshRequest::Control(request))
                .await?
            {
                MeshReply::Control(reply) => Ok(reply),
                _ => Err(MeshError("unexpected reply from controller".into())),
            }
        }
    }

    /// Shard 0: starts the controller task, then publishes the recovered metadata.
    pub async fn start_controller(self: &Rc<Self>, controller: Controller) {
        let (tx, rx) = local_channel::new_bounded::<ControlJob>(CONTROLLER_QUEUE_CAPACITY);
        *self.controller_queue.borrow_mut() = Some(Rc::new(tx));
        let controller = Rc::new(controller);
        self.publish(controller.snapshot()).await;
        let shard = self.clone();
        glommio::spawn_local(async move {
            while let Some((request, reply_to)) = rx.recv().await {
                let (reply, snapshot) = controller.handle(request).await;
                if let Some(snapshot) = snapshot {
                    shard.publish(snapshot).await;
                }
                let _ = reply_to.send(reply);
            }
        })
        .detach();
    }

    /// Applies a snapshot here and on every other shard; returns when all have applied it.
    async fn publish(self: &Rc<Self>, snapshot: Arc<ClusterSnapshot>) {
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
            match PartitionLog::open(&dir, self.log_config(&topic)).await {
                Ok(log) => {
                    tracing::debug!(topic = %topic.name, partition = index, shard = self.id.0, "partition opened");
                    let partition = Rc::new(Partition {
                        topic: topic.clone(),
                        index,
                        log: RefCell::new(log),
                        queued_for_flush: Cell::new(false),
                        removed: Cell::new(false),
                        incarnation: Cell::new(0),
                        reviving: Cell::new(false),
                    });
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

    /// Serves messages arriving from one peer shard.
    pub fn spawn_mesh_receiver(
        self: &Rc<Self>,
        from: ShardId,
        receiver: ConnectedReceiver<MeshMessage>,
    ) {
        let shard = self.clone();
        glommio::spawn_local(async move {
            while let Some(message) = receiver.recv().await {
                match message {
                    MeshMessage::Reply { id, body } => shard.mesh.complete(id, body),
                    MeshMessage::Request {
                        from: sender,
                        id,
                        body,
                    } => {
                        debug_assert_eq!(sender, from);
                        let shard = shard.clone();
                        glommio::spawn_local(async move {
                            let reply = match body {
                                MeshRequest::ApplySnapshot(snapshot) => {
                                    shard.apply_snapshot(snapshot).await;
                                    MeshReply::Applied
                                }
                                MeshRequest::Metrics => {
                                    MeshReply::Metrics(Box::new(shard.metrics_snapshot()))
                                }
                                MeshRequest::WriteTxnMarkers(markers) => {
                                    MeshReply::TxnMarkers(shard.write_txn_markers(&markers).await)
                                }
                                MeshRequest::EndTxnOffsets {
                                    group,
                                    producer_id,
                                    commit,
                                } => MeshReply::TxnOffsetsEnded(
                                    shard
                                        .groups
                                        .end_txn_offsets(&group, producer_id, commit)
                                        .await,
                                ),
                                MeshRequest::Control(request) => match shard.control(request).await
                                {
                                    Ok(reply) => MeshReply::Control(reply),
                                    Err(err) => {
                                        tracing::error!(?err, "control request failed");
                                        return;
                                    }
                                },
                            };
                            shard.mesh.reply(sender, id, reply).await;
                        })
                        .detach();
                    }
                }
            }
        })
        .detach();
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
    fn revive(self: &Rc<Self>, partition: Rc<Partition>) {
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
                let reopened = match PartitionLog::open(&dir, config).await {
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
                for partition in shard.all_partitions() {
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
        for task in [
            glommio::spawn_local_into(
                Box::pin(retention) as std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>,
                queue,
            ),
            glommio::spawn_local_into(Box::pin(compaction), queue),
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
    async fn sleep_unless_shutdown(&self, every: Duration) -> bool {
        if self.shutting_down.get() {
            return false;
        }
        let seen = self.shutdown.generation();
        let _ = crate::util::timeout(every, self.shutdown.wait(seen)).await;
        !self.shutting_down.get()
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
