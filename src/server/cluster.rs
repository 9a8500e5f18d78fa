//! A cluster member's inter-node links, on every shard: Raft messages go to the shard's
//! groups by group id (the metadata group on shard 0, replicated partitions on the shard
//! that holds them); forwarded metadata changes and their replies, and the liveness of
//! peers, go to shard 0's metadata group; leadership claims go to the shards holding the
//! replicas.

use std::rc::Rc;

use bytes::Bytes;
use raft::eraftpb::Message;

use super::rpc::{LinkHandler, PeerLinks, ReplyFuture};
use crate::cluster::controller::ControlRequest;
use crate::shard::leaders::OP_CLAIM_LEADERSHIP;
use crate::shard::meta::{ForwardReply, OP_CONTROL_FORWARD};
use crate::shard::raft_group::PeerTransport;
use crate::shard::Shard;

/// Hands what peers send to the shard's Raft groups and (shard 0) metadata group.
pub struct ShardLinks {
    pub shard: Rc<Shard>,
}

impl LinkHandler for ShardLinks {
    fn on_raft(&self, peer: u64, messages: Vec<(u64, Message)>) {
        let groups = self.shard.raft_groups.borrow();
        let mut unknown = 0;
        for (group, message) in messages {
            match groups.get(&group) {
                Some(g) => g.deliver([message]),
                None => unknown += 1,
            }
        }
        if unknown > 0 {
            // A group not created here yet (its metadata not applied) or already
            // deleted: Raft retries.
            tracing::debug!(
                peer,
                unknown,
                "Raft messages for groups this shard does not run"
            );
        }
    }

    fn on_request(&self, peer: u64, req_id: u64, op: u8, payload: Bytes) -> ReplyFuture {
        let shard = self.shard.clone();
        Box::pin(async move {
            if op == OP_CLAIM_LEADERSHIP {
                shard.claim_leadership_asked(peer, &payload).await;
                return Bytes::new();
            }
            let group = shard.meta.borrow().clone();
            let Some(group) = group.filter(|_| op == OP_CONTROL_FORWARD) else {
                tracing::warn!(
                    peer,
                    req_id,
                    op,
                    shard = shard.id.0,
                    "unknown inter-node request; not answered"
                );
                return Bytes::new();
            };
            let request: ControlRequest = match serde_json::from_slice(&payload) {
                Ok(request) => request,
                Err(err) => {
                    tracing::warn!(peer, %err, "unreadable forwarded metadata change");
                    return Bytes::new();
                }
            };
            let reply = match shard.control_forwarded(request).await {
                Ok(reply) => reply,
                Err(err) => {
                    tracing::warn!(peer, ?err, "forwarded metadata change not handled");
                    return Bytes::new();
                }
            };
            let answer = ForwardReply {
                reply,
                applied: group.applied(),
            };
            Bytes::from(serde_json::to_vec(&answer).unwrap_or_default())
        })
    }

    fn on_reply(&self, _peer: u64, req_id: u64, payload: Bytes) {
        if let Some(group) = self.shard.meta.borrow().as_ref() {
            group.reply(req_id, payload);
        }
    }

    fn on_link(&self, peer: u64, up: bool) {
        tracing::info!(peer, up, shard = self.shard.id.0, "link to peer");
        if let Some(group) = self.shard.meta.borrow().as_ref() {
            if up {
                group.peer_up(peer);
            } else {
                group.peer_down(peer);
            }
        }
        if !up {
            for group in self.shard.raft_groups.borrow().values() {
                group.unreachable(peer);
            }
        }
    }
}

impl PeerTransport for PeerLinks {
    fn send_raft(&self, peer: u64, group: u64, message: Message) -> bool {
        PeerLinks::send_raft(self, peer, group, message).is_ok()
    }

    fn send_request(&self, peer: u64, req_id: u64, op: u8, payload: Bytes) -> bool {
        PeerLinks::send_request(self, peer, req_id, op, payload).is_ok()
    }

    fn is_up(&self, peer: u64) -> bool {
        PeerLinks::is_up(self, peer)
    }

    fn heartbeat_answered(&self, peer: u64, rtt: std::time::Duration) {
        PeerLinks::heartbeat_answered(self, peer, rtt)
    }

    fn traffic(&self) -> Vec<crate::metrics::PeerTraffic> {
        self.peer_ids()
            .into_iter()
            .filter_map(|peer| {
                let s = self.stats(peer)?;
                Some(crate::metrics::PeerTraffic {
                    peer,
                    up: s.up,
                    bytes_sent: s.bytes_sent,
                    bytes_received: s.bytes_received,
                    reconnects: s.reconnects,
                    raft_dropped: s.raft_dropped_full
                        + s.raft_dropped_down
                        + s.raft_dropped_too_large,
                    heartbeat_rtt: self.heartbeat_rtt(peer)?,
                })
            })
            .collect()
    }
}
