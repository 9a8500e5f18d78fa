//! The shard mesh: bounded channels between every pair of shards.
//!
//! Shards never share state; when one needs another (a CreateTopics arriving on shard 3
//! goes to the controller on shard 0, the controller pushes a new metadata snapshot to every
//! shard), it sends a message and awaits the reply. Requests carry an id; replies resolve
//! the matching oneshot in the sender's pending table. The channels are created by the main
//! thread, one per ordered pair (from, to), so a shard's index is its position in the mesh.
//!
//! The messages, who sends each and what serves it ([`Shard::spawn_mesh_receiver`]):
//!
//! | request | sent by | served by | reply |
//! |---|---|---|---|
//! | `Control` | any shard's handlers (CreateTopics, DeleteTopics, configs, producer ids) | the controller on shard 0 | `Control` |
//! | `ApplySnapshot` | the controller, after each metadata change | every shard: [`Shard::apply_snapshot`] | `Applied` |
//! | `Metrics` | the metrics listener on shard 0, per scrape | every shard: [`Shard::metrics_snapshot`] | `Metrics` |
//! | `HighWatermarks` | the metrics listener on shard 0, per scrape (group lag) | the shard holding the partitions: [`Shard::high_watermarks`](super::Shard::high_watermarks) | `HighWatermarks` |
//! | `WriteTxnMarkers` | a transaction coordinator ending a transaction | the shard owning the partitions: [`Shard::write_txn_markers`] | `TxnMarkers` |
//! | `VerifyTxnPartition` | a partition leader appending the first transactional batch of a producer's transaction (KIP-890) | the transactional id's coordinator: [`Shard::check_partition_in_txn`](super::Shard::check_partition_in_txn) | `TxnPartitionVerified` |
//! | `EndTxnOffsets` | a transaction coordinator ending a transaction | the group's coordinator: [`GroupCoordinator::end_txn_offsets`](crate::coordinator::GroupCoordinator::end_txn_offsets) | `TxnOffsetsEnded` |
//! | `ClaimLeadership` | a preferred leader election (ElectLeaders, a peer's claim) | the shard holding the replicas: [`Shard::claim_leadership`](super::Shard::claim_leadership) | `Applied` |
//!
//! [`Shard::spawn_mesh_receiver`]: super::Shard::spawn_mesh_receiver
//! [`Shard::apply_snapshot`]: super::Shard::apply_snapshot
//! [`Shard::metrics_snapshot`]: super::Shard::metrics_snapshot
//! [`Shard::write_txn_markers`]: super::Shard::write_txn_markers

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::Arc;

use futures_channel::oneshot;
use glommio::channels::shared_channel::{
    self, ConnectedReceiver, ConnectedSender, SharedReceiver, SharedSender,
};

use crate::cluster::controller::{ControlReply, ControlRequest};
use crate::cluster::{PublishedSnapshot, ShardId};

/// Messages a channel holds before senders wait.
pub const MESH_CHANNEL_CAPACITY: usize = 1024;

pub enum MeshRequest {
    /// For the controller on shard 0.
    Control(ControlRequest),
    /// From the controller: apply this metadata, reply `Applied` when done.
    ApplySnapshot(Arc<PublishedSnapshot>),
    /// For a metrics scrape on shard 0: reply with this shard's counters.
    Metrics,
    /// For a metrics scrape on shard 0 (consumer group lag): the high watermarks of these
    /// partitions, `None` for those this shard holds no replica of.
    HighWatermarks(Vec<(String, i32)>),
    /// From a transaction coordinator: write these markers to partitions this shard owns,
    /// reply once they are durable.
    WriteTxnMarkers(TxnMarkers),
    /// From a partition leader (KIP-890): does the producer's ongoing transaction, which
    /// this shard coordinates, include this partition? Reply `TxnPartitionVerified`.
    VerifyTxnPartition {
        transactional_id: String,
        producer_id: i64,
        producer_epoch: i16,
        topic: String,
        partition: i32,
    },
    /// From a transaction coordinator: the producer's transaction ended; commit or drop
    /// its pending offsets in `group`, which this shard coordinates.
    EndTxnOffsets {
        group: String,
        producer_id: i64,
        commit: bool,
    },
    /// This shard's replicas of these Raft groups claim their leadership (preferred
    /// leader elections); reply `Applied` once asked.
    ClaimLeadership(Vec<u64>),
}

/// Transaction markers for one producer, to partitions of one shard.
#[derive(Clone, Debug)]
pub struct TxnMarkers {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub commit: bool,
    pub partitions: Vec<(String, i32)>,
}

pub enum MeshReply {
    Control(ControlReply),
    Applied,
    Metrics(Box<crate::metrics::Snapshot>),
    HighWatermarks(Vec<Option<i64>>),
    /// An error code per partition of [`TxnMarkers`] (NONE: durable or not needed).
    TxnMarkers(Vec<i16>),
    /// Whether the offsets' fate is durable.
    TxnOffsetsEnded(bool),
    /// The request could not be served; the requester gets a [`MeshError`] instead of
    /// waiting for ever.
    Failed(String),
    /// NONE when the producer's ongoing transaction includes the partition; else the
    /// error the produce gets.
    TxnPartitionVerified(i16),
}

pub enum MeshMessage {
    Request {
        from: ShardId,
        id: u64,
        body: MeshRequest,
    },
    Reply {
        id: u64,
        body: MeshReply,
    },
}

/// The not-yet-connected ends of every channel; built on the main thread.
pub struct MeshEnds {
    /// senders[to] for one shard.
    pub senders: Vec<Option<SharedSender<MeshMessage>>>,
    /// receivers[from] for one shard.
    pub receivers: Vec<Option<SharedReceiver<MeshMessage>>>,
}

/// Builds the ends for `shards` shards; element k belongs to shard k.
pub fn build(shards: usize) -> Vec<MeshEnds> {
    let mut ends: Vec<MeshEnds> = (0..shards)
        .map(|_| MeshEnds {
            senders: (0..shards).map(|_| None).collect(),
            receivers: (0..shards).map(|_| None).collect(),
        })
        .collect();
    for from in 0..shards {
        for to in 0..shards {
            if from != to {
                let (tx, rx) = shared_channel::new_bounded(MESH_CHANNEL_CAPACITY);
                ends[from].senders[to] = Some(tx);
                ends[to].receivers[from] = Some(rx);
            }
        }
    }
    ends
}

#[derive(Debug)]
pub struct MeshError(pub String);

/// One shard's connected view of the mesh.
pub struct Mesh {
    me: ShardId,
    senders: Vec<Option<ConnectedSender<MeshMessage>>>,
    next_id: Cell<u64>,
    pending: RefCell<HashMap<u64, oneshot::Sender<MeshReply>>>,
}

impl Mesh {
    /// Connects this shard's ends; returns the mesh and the receivers to poll.
    pub async fn connect(
        me: ShardId,
        ends: MeshEnds,
    ) -> (Mesh, Vec<(ShardId, ConnectedReceiver<MeshMessage>)>) {
        // `connect` waits for the other end to connect too, so every end is connected
        // concurrently: connecting them one by one deadlocks two shards that each wait
        // for the other's first end.
        let sender_tasks: Vec<_> = ends
            .senders
            .into_iter()
            .map(|s| s.map(|s| glommio::spawn_local(s.connect())))
            .collect();
        let receiver_tasks: Vec<_> = ends
            .receivers
            .into_iter()
            .enumerate()
            .filter_map(|(from, r)| {
                r.map(|r| (ShardId(from as u16), glommio::spawn_local(r.connect())))
            })
            .collect();
        let mut senders = Vec::with_capacity(sender_tasks.len());
        for task in sender_tasks {
            senders.push(match task {
                Some(task) => Some(task.await),
                None => None,
            });
        }
        let mut receivers = Vec::with_capacity(receiver_tasks.len());
        for (from, task) in receiver_tasks {
            receivers.push((from, task.await));
        }
        let mesh = Mesh {
            me,
            senders,
            next_id: Cell::new(1),
            pending: RefCell::new(HashMap::new()),
        };
        (mesh, receivers)
    }

    pub fn me(&self) -> ShardId {
        self.me
    }

    /// Sends a request to another shard and waits for its reply.
    pub async fn request(&self, to: ShardId, body: MeshRequest) -> Result<MeshReply, MeshError> {
        let sender = self
            .senders
            .get(to.0 as usize)
            .and_then(|s| s.as_ref())
            .ok_or_else(|| MeshError(format!("no mesh channel to shard {}", to.0)))?;
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let (tx, rx) = oneshot::channel();
        self.pending.borrow_mut().insert(id, tx);
        let message = MeshMessage::Request {
            from: self.me,
            id,
            body,
        };
        if sender.send(message).await.is_err() {
            self.pending.borrow_mut().remove(&id);
            return Err(MeshError(format!("shard {} is gone", to.0)));
        }
        match rx.await {
            Ok(MeshReply::Failed(why)) => Err(MeshError(format!("shard {}: {why}", to.0))),
            Ok(reply) => Ok(reply),
            Err(_) => Err(MeshError(format!("shard {} dropped the request", to.0))),
        }
    }

    /// Answers a request received from `to`.
    pub async fn reply(&self, to: ShardId, id: u64, body: MeshReply) {
        if let Some(sender) = self.senders.get(to.0 as usize).and_then(|s| s.as_ref()) {
            if sender.send(MeshMessage::Reply { id, body }).await.is_err() {
                tracing::warn!(
                    shard = to.0,
                    "could not deliver a mesh reply: shard is gone"
                );
            }
        }
    }

    /// Routes a reply to the task waiting for it.
    pub fn complete(&self, id: u64, body: MeshReply) {
        if let Some(tx) = self.pending.borrow_mut().remove(&id) {
            let _ = tx.send(body);
        }
    }
}

impl super::Shard {
    /// Serves messages arriving from one peer shard.
    pub fn spawn_mesh_receiver(
        self: &std::rc::Rc<Self>,
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
                                MeshRequest::HighWatermarks(partitions) => {
                                    MeshReply::HighWatermarks(shard.high_watermarks(&partitions))
                                }
                                MeshRequest::WriteTxnMarkers(markers) => {
                                    MeshReply::TxnMarkers(shard.write_txn_markers(&markers).await)
                                }
                                MeshRequest::VerifyTxnPartition {
                                    transactional_id,
                                    producer_id,
                                    producer_epoch,
                                    topic,
                                    partition,
                                } => MeshReply::TxnPartitionVerified(shard.check_partition_in_txn(
                                    &transactional_id,
                                    producer_id,
                                    producer_epoch,
                                    &topic,
                                    partition,
                                )),
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
                                MeshRequest::ClaimLeadership(groups) => {
                                    shard.claim_here(&groups);
                                    MeshReply::Applied
                                }
                                MeshRequest::Control(request) => match shard.control(request).await
                                {
                                    Ok(reply) => MeshReply::Control(reply),
                                    Err(err) => {
                                        tracing::error!(?err, "control request failed");
                                        MeshReply::Failed(err.0)
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
}
