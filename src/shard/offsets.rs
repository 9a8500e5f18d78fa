//! A cluster's consumer groups live in the `__consumer_offsets` topic, as in Kafka: group
//! `g` belongs to partition `hash(g) % partitions`, and the shard leading that partition
//! coordinates it. The coordinator's records (commits, deletions, transactional offsets,
//! checkpoints) are appended to the partition and answered once committed, so they are on
//! a majority of its replicas; a replica that becomes leader reads the partition back
//! before it answers for the partition's groups (COORDINATOR_LOAD_IN_PROGRESS meanwhile),
//! and one that stops leading drops them (NOT_COORDINATOR: clients find the new leader).

use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{Partition, Shard};
use crate::coordinator::{decode_group_batch, Load, OffsetsLog, Replay, OFFSETS_TOPIC};
use crate::protocol::errors::*;

/// Bytes read per step while reading an offsets partition back.
const LOAD_READ_BYTES: usize = 1 << 20;

/// A shard's offsets partitions, as its group coordinator writes them.
pub struct ShardOffsetsLog(pub Weak<Shard>);

impl OffsetsLog for ShardOffsetsLog {
    fn partition_count(&self) -> usize {
        self.0.upgrade().map_or(0, |shard| {
            shard
                .snapshot()
                .topic(OFFSETS_TOPIC)
                .map_or(0, |t| t.partitions.len())
        })
    }

    fn append(
        &self,
        partition: i32,
        term: u64,
        batch: Bytes,
    ) -> Pin<Box<dyn std::future::Future<Output = Result<(), i16>>>> {
        let shard = self.0.upgrade();
        Box::pin(async move {
            let shard = shard.ok_or(COORDINATOR_NOT_AVAILABLE)?;
            let code = shard.append_group_batch(partition, term, batch).await;
            match code {
                NONE => Ok(()),
                NOT_LEADER_OR_FOLLOWER | UNKNOWN_TOPIC_OR_PARTITION | NOT_COORDINATOR => {
                    Err(NOT_COORDINATOR)
                }
                _ => Err(COORDINATOR_NOT_AVAILABLE),
            }
        })
    }
}

impl Shard {
    /// Appends a batch of group records to offsets partition `index`, led here in
    /// `term`; the error code of the append, NONE once committed (durable on this node
    /// alone for a partition with one replica).
    async fn append_group_batch(&self, index: i32, term: u64, batch: Bytes) -> i16 {
        let Some(partition) = self.partition(OFFSETS_TOPIC, index) else {
            return NOT_COORDINATOR;
        };
        let deadline =
            Instant::now() + Duration::from_millis(self.config.offsets_commit_timeout_ms);
        let info = match crate::protocol::batch::parse_batch(&batch) {
            Ok(info) => info,
            Err(err) => {
                tracing::error!(?err, "a group batch does not parse");
                return UNKNOWN_SERVER_ERROR;
            }
        };
        match &partition.group {
            Some(group) => {
                if !group.is_leader() || group.current_term() != term {
                    return NOT_COORDINATOR;
                }
                let (entry, placed_term) = match group.propose(batch) {
                    Ok(placed) => placed,
                    Err(_) => return NOT_COORDINATOR,
                };
                if placed_term != term {
                    return NOT_COORDINATOR;
                }
                self.wait_committed(&partition, entry, term, false, deadline)
                    .await
            }
            None => {
                let appended =
                    partition
                        .log
                        .borrow_mut()
                        .append(&batch, &info, crate::util::now_ms());
                let last_offset = match appended {
                    Ok(crate::storage::AppendOutcome::Appended { last_offset, .. }) => last_offset,
                    Ok(_) => return UNKNOWN_SERVER_ERROR,
                    Err(err) => return err.error_code(),
                };
                self.add_unflushed(info.len);
                self.mark_dirty(&partition);
                let incarnation = partition.incarnation.get();
                self.wait_durable(&partition, last_offset, incarnation, deadline)
                    .await
            }
        }
    }
}

/// Follows one offsets partition replica of this shard: while it leads (a partition with
/// one replica always does), its groups are read back and coordinated here; when it stops
/// leading, they are dropped. Runs until the partition is removed or the shard stops.
pub(super) async fn coordinate(shard: Rc<Shard>, partition: Rc<Partition>) {
    let index = partition.index;
    loop {
        if partition.removed.get() || shard.shutting_down.get() {
            break;
        }
        let seen = partition.group.as_ref().map(|g| g.changed.generation());
        let leading = match &partition.group {
            Some(group) => {
                (group.is_leader() && !group.is_stopping()).then(|| group.current_term())
            }
            None => Some(0),
        };
        match (leading, shard.groups.load_state(index)) {
            (Some(term), Some(Load::Loaded(t) | Load::Loading(t))) if t == term => {}
            (Some(term), _) => {
                shard.groups.start_loading(index, term);
                match read_back(&shard, &partition, term).await {
                    Some(replay) => {
                        if shard.groups.finish_loading(index, term, replay) {
                            shard.watch_members();
                        }
                    }
                    None => {
                        // The leadership moved (or the read failed): look again.
                        if shard.groups.load_state(index) == Some(Load::Loading(term)) {
                            shard.groups.unload(index);
                        }
                        glommio::timer::sleep(Duration::from_millis(100)).await;
                    }
                }
                continue;
            }
            (None, Some(_)) => shard.groups.unload(index),
            (None, None) => {}
        }
        match (&partition.group, seen) {
            (Some(group), Some(seen)) => {
                let _ = futures_lite::future::or(
                    group.changed.wait(seen),
                    shard.shutdown.wait(shard.shutdown.generation()),
                )
                .await;
            }
            _ => {
                let _ = futures_lite::future::or(
                    partition.durable.wait(partition.durable.generation()),
                    shard.shutdown.wait(shard.shutdown.generation()),
                )
                .await;
            }
        }
    }
    shard.groups.unload(index);
}

/// Whether the partition is still led here in `term`.
fn still_leading(partition: &Partition, term: u64) -> bool {
    !partition.removed.get()
        && partition
            .group
            .as_ref()
            .is_none_or(|g| g.is_leader() && g.current_term() == term && !g.is_stopping())
}

/// Reads an offsets partition back, once everything before this leader's term is
/// committed (its first entry of the term is: the high watermark passed the log end it
/// had when elected). `None` if the leadership moved meanwhile or the log cannot be read.
async fn read_back(shard: &Shard, partition: &Partition, term: u64) -> Option<Replay> {
    let started = Instant::now();
    let target = partition.log.borrow().next_offset();
    loop {
        let seen = partition.durable.generation();
        if !still_leading(partition, term) || shard.shutting_down.get() {
            return None;
        }
        if partition.log.borrow().high_watermark() >= target {
            break;
        }
        let _ =
            crate::util::timeout(Duration::from_millis(500), partition.durable.wait(seen)).await;
    }
    let mut replay = Replay::default();
    let mut offset = partition.log.borrow().log_start_offset();
    let mut records = 0usize;
    loop {
        let plan = partition.log.borrow().read_plan(offset, LOAD_READ_BYTES);
        let data = match plan {
            Ok(plan) => match plan.read().await {
                Ok(data) => data,
                Err(err) => {
                    tracing::error!(partition = partition.index, %err, "cannot read an offsets partition back");
                    return None;
                }
            },
            Err(err) => {
                // Retention moved the log start past the read: start over.
                tracing::debug!(
                    partition = partition.index,
                    ?err,
                    "offsets partition read lost its place; reading again"
                );
                return None;
            }
        };
        let bytes = data.to_bytes();
        if bytes.is_empty() {
            break;
        }
        let before = offset;
        for item in crate::protocol::batch::iter_batches(&bytes) {
            let Ok((at, info)) = item else { break };
            if info.last_offset() < offset {
                continue;
            }
            match decode_group_batch(&bytes[at..at + info.len]) {
                Ok(batch) => {
                    records += batch.len();
                    for record in batch {
                        replay.apply(record);
                    }
                }
                Err(err) => {
                    tracing::error!(partition = partition.index, %err, "an offsets partition batch is unreadable; skipped")
                }
            }
            offset = info.last_offset() + 1;
        }
        if offset == before {
            break;
        }
    }
    if !still_leading(partition, term) {
        return None;
    }
    tracing::debug!(
        partition = partition.index,
        term,
        records,
        ms = started.elapsed().as_millis() as u64,
        "offsets partition read back"
    );
    Some(replay)
}
