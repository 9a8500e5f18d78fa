//! A cluster member's inter-node links on shard 0: what peers send reaches the metadata
//! group ([`MetaGroup`]) and the controller; what the group sends goes out on the links.

use std::rc::Rc;

use bytes::Bytes;
use raft::eraftpb::Message;

use super::rpc::{LinkHandler, PeerLinks, ReplyFuture};
use crate::cluster::controller::ControlRequest;
use crate::shard::meta::{
    ForwardReply, MetaGroup, PeerTransport, METADATA_GROUP, OP_CONTROL_FORWARD,
};
use crate::shard::Shard;

/// Hands what peers send to the node's metadata group and controller.
pub struct MetaLinks {
    pub shard: Rc<Shard>,
    pub group: Rc<MetaGroup>,
}

impl LinkHandler for MetaLinks {
    fn on_raft(&self, peer: u64, messages: Vec<(u64, Message)>) {
        let mut ours = Vec::with_capacity(messages.len());
        for (group, message) in messages {
            if group == METADATA_GROUP {
                ours.push(message);
            } else {
                tracing::debug!(
                    peer,
                    group,
                    "a Raft message for a group this node does not run"
                );
            }
        }
        self.group.deliver(ours);
    }

    fn on_request(&self, peer: u64, req_id: u64, op: u8, payload: Bytes) -> ReplyFuture {
        let shard = self.shard.clone();
        let group = self.group.clone();
        Box::pin(async move {
            if op != OP_CONTROL_FORWARD {
                tracing::warn!(peer, req_id, op, "unknown inter-node request; not answered");
                return Bytes::new();
            }
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
        self.group.reply(req_id, payload);
    }

    fn on_link(&self, peer: u64, up: bool) {
        tracing::info!(peer, up, "link to peer");
        if up {
            self.group.peer_up(peer);
        } else {
            self.group.peer_down(peer);
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
}
