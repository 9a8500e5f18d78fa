//! Request handlers, one module per Kafka API family.
//!
//! [`dispatch`] checks the version against [`crate::protocol::versions`], decodes the body
//! with `kafka-protocol` and calls the handler. A handler returns the encoded response, no
//! response (acks=0 produce) or a reason to close the connection (what Kafka does when a
//! request cannot be decoded). Handlers must not await before their state changes: see
//! the ordering note in [`crate::server`].

mod acls;
mod admin;
mod api_versions;
mod consumer_group;
mod create_topics;
mod elect_leaders;
mod fetch;
mod groups;
mod init_producer_id;
mod list_offsets;
mod metadata;
mod offsets;
mod produce;
mod sasl;
mod scram_credentials;
mod txn;
mod write_txn_markers;

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::{Decodable, Encodable};

use crate::protocol::codec::{self, RequestFrame};
use crate::protocol::versions::{self, PRODUCE_MIN_ACCEPTED};
use crate::shard::Shard;

/// Kafka's ACL operation codes (`AclOperation`), as bits of an `authorized_operations`
/// field.
mod acl_operation {
    pub const READ: i32 = 3;
    pub const WRITE: i32 = 4;
    pub const CREATE: i32 = 5;
    pub const DELETE: i32 = 6;
    pub const ALTER: i32 = 7;
    pub const DESCRIBE: i32 = 8;
    pub const CLUSTER_ACTION: i32 = 9;
    pub const DESCRIBE_CONFIGS: i32 = 10;
    pub const ALTER_CONFIGS: i32 = 11;
    pub const IDEMPOTENT_WRITE: i32 = 12;
}

/// What a client that asks for `authorized_operations` is told. Without an authorizer
/// every principal may do everything a resource supports, so Kafka answers with all of
/// them (`AuthHelper.authorizedOperations`); a client that does not ask gets
/// [`AUTHORIZED_OPERATIONS_OMITTED`].
pub(crate) mod authorized {
    use super::acl_operation::*;

    const fn bits(ops: &[i32]) -> i32 {
        let mut out = 0;
        let mut i = 0;
        while i < ops.len() {
            out |= 1 << ops[i];
            i += 1;
        }
        out
    }

    pub const TOPIC: i32 = bits(&[
        READ,
        WRITE,
        CREATE,
        DELETE,
        ALTER,
        DESCRIBE,
        DESCRIBE_CONFIGS,
        ALTER_CONFIGS,
    ]);
    pub const GROUP: i32 = bits(&[READ, DESCRIBE, DELETE]);
    pub const CLUSTER: i32 = bits(&[
        CREATE,
        CLUSTER_ACTION,
        DESCRIBE_CONFIGS,
        ALTER_CONFIGS,
        IDEMPOTENT_WRITE,
        ALTER,
        DESCRIBE,
    ]);
    /// "Not asked for" (Kafka's `Integer.MIN_VALUE`).
    pub const AUTHORIZED_OPERATIONS_OMITTED: i32 = i32::MIN;

    /// `ops` if the client asked for them.
    pub fn when(asked: bool, ops: i32) -> i32 {
        if asked {
            ops
        } else {
            AUTHORIZED_OPERATIONS_OMITTED
        }
    }
}

/// A string for a response field.
fn s(value: impl Into<String>) -> kafka_protocol::protocol::StrBytes {
    kafka_protocol::protocol::StrBytes::from_string(value.into())
}

pub enum Response {
    Bytes(Bytes),
    /// A response in pieces written in order (a Fetch response with its records spliced in).
    Pieces(Vec<crate::protocol::pieces::Piece>),
    /// The request wants no response (Produce with acks=0).
    None,
    /// Close the connection; the reason is logged.
    Close(String),
}

/// What a handler needs to know about the request it answers.
pub struct Ctx {
    pub api: ApiKey,
    pub version: i16,
    pub correlation_id: i32,
    /// The client id of the request header ("" if null).
    pub client_id: String,
    /// The peer address, as group descriptions report it.
    pub client_host: Rc<str>,
    /// Who the connection authenticated as (`User:ANONYMOUS` if it did not).
    pub principal: Rc<str>,
    /// Bytes of the request body: what record bytes shared with it keep in memory.
    pub body_bytes: usize,
    /// The listener the request arrived on (an index into the listeners in force): the
    /// one whose endpoints Metadata, FindCoordinator and DescribeCluster advertise.
    pub listener: usize,
}

impl Ctx {
    pub fn respond<R: Encodable>(&self, body: &R) -> Response {
        match codec::encode_response(self.correlation_id, self.api, self.version, body) {
            Ok(bytes) => Response::Bytes(bytes),
            // A response we cannot encode is a bug of ours, not the client's; still, keep
            // the broker up and tell the client by closing.
            Err(err) => Response::Close(format!(
                "cannot encode {:?} v{} response: {err}",
                self.api, self.version
            )),
        }
    }
}

fn decode<T: Decodable>(ctx: &Ctx, body: &mut Bytes) -> Result<T, Response> {
    let request = codec::decode_body(body, ctx.version).map_err(|err| {
        Response::Close(format!(
            "cannot decode {:?} v{} request: {err}",
            ctx.api, ctx.version
        ))
    })?;
    Ok(request)
}

pub async fn dispatch(
    shard: &Rc<Shard>,
    frame: RequestFrame,
    client: (Rc<str>, Rc<str>),
    listener: usize,
) -> Response {
    let api = frame.api_key;
    let bytes_in = frame.body.len();
    let started = std::time::Instant::now();
    let response = dispatch_inner(shard, frame, client, listener).await;
    let (bytes_out, closed) = match &response {
        Response::Bytes(b) => (b.len(), false),
        Response::Pieces(p) => (crate::protocol::pieces::total_len(p), false),
        Response::None => (0, false),
        Response::Close(_) => (0, true),
    };
    shard
        .metrics
        .request(api, bytes_in, bytes_out, started.elapsed(), closed);
    response
}

async fn dispatch_inner(
    shard: &Rc<Shard>,
    frame: RequestFrame,
    (client_host, principal): (Rc<str>, Rc<str>),
    listener: usize,
) -> Response {
    let RequestFrame {
        api_key,
        version,
        header,
        mut body,
    } = frame;
    let ctx = Ctx {
        api: api_key,
        version,
        correlation_id: header.correlation_id,
        client_id: header
            .client_id
            .as_ref()
            .map(|c| c.to_string())
            .unwrap_or_default(),
        client_host,
        principal,
        body_bytes: body.len(),
        listener,
    };
    if api_key == ApiKey::ApiVersions {
        return api_versions::handle(&ctx);
    }
    if !versions::is_supported(api_key, version) {
        return Response::Close(format!(
            "unsupported request {api_key:?} v{version} (see docs/protocol.md)"
        ));
    }
    if let Some(denied) = acls::precheck(shard, &ctx, &body) {
        return denied;
    }
    // Decodes the body as the handler's request type and calls it.
    macro_rules! call {
        ($handler:path) => {
            match decode(&ctx, &mut body) {
                Ok(request) => $handler(shard, &ctx, request).await,
                Err(response) => response,
            }
        };
    }
    let response = match api_key {
        ApiKey::Produce if version < PRODUCE_MIN_ACCEPTED => Response::Close(format!(
            "Produce v{version} carries message format v0/v1, which this broker does not store; use a client that sends magic-2 batches (Produce v3+)"
        )),
        ApiKey::Produce => call!(produce::handle),
        ApiKey::Fetch => call!(fetch::handle),
        ApiKey::ListOffsets => call!(list_offsets::handle),
        ApiKey::Metadata => call!(metadata::handle),
        ApiKey::CreateTopics => call!(create_topics::create),
        ApiKey::DeleteTopics => call!(create_topics::delete),
        ApiKey::InitProducerId => call!(init_producer_id::handle),
        ApiKey::FindCoordinator => call!(groups::find_coordinator),
        ApiKey::SaslHandshake => call!(sasl::handshake),
        ApiKey::SaslAuthenticate => call!(sasl::authenticate),
        ApiKey::JoinGroup => call!(groups::join_group),
        ApiKey::SyncGroup => call!(groups::sync_group),
        ApiKey::Heartbeat => call!(groups::heartbeat),
        ApiKey::LeaveGroup => call!(groups::leave_group),
        ApiKey::ConsumerGroupHeartbeat => call!(consumer_group::heartbeat),
        ApiKey::ConsumerGroupDescribe => call!(consumer_group::describe),
        ApiKey::OffsetCommit => call!(offsets::offset_commit),
        ApiKey::OffsetFetch => call!(offsets::offset_fetch),
        ApiKey::ListGroups => call!(groups::list_groups),
        ApiKey::DescribeGroups => call!(groups::describe_groups),
        ApiKey::DeleteGroups => call!(groups::delete_groups),
        ApiKey::OffsetDelete => call!(offsets::offset_delete),
        ApiKey::DescribeConfigs => call!(admin::describe_configs),
        ApiKey::AlterConfigs => call!(admin::alter_configs),
        ApiKey::IncrementalAlterConfigs => call!(admin::incremental_alter_configs),
        ApiKey::CreatePartitions => call!(admin::create_partitions),
        ApiKey::DeleteRecords => call!(admin::delete_records),
        ApiKey::DescribeLogDirs => call!(admin::describe_log_dirs),
        ApiKey::DescribeCluster => call!(admin::describe_cluster),
        ApiKey::OffsetForLeaderEpoch => call!(admin::offset_for_leader_epoch),
        ApiKey::ElectLeaders => call!(elect_leaders::handle),
        ApiKey::AddPartitionsToTxn => call!(txn::add_partitions_to_txn),
        ApiKey::AddOffsetsToTxn => call!(txn::add_offsets_to_txn),
        ApiKey::EndTxn => call!(txn::end_txn),
        ApiKey::TxnOffsetCommit => call!(txn::txn_offset_commit),
        ApiKey::DescribeTransactions => call!(txn::describe_transactions),
        ApiKey::ListTransactions => call!(txn::list_transactions),
        ApiKey::DescribeProducers => call!(txn::describe_producers),
        ApiKey::WriteTxnMarkers => call!(write_txn_markers::handle),
        ApiKey::DescribeUserScramCredentials => call!(scram_credentials::describe),
        ApiKey::AlterUserScramCredentials => call!(scram_credentials::alter),
        ApiKey::CreateAcls => call!(acls::create_acls),
        ApiKey::DescribeAcls => call!(acls::describe_acls),
        ApiKey::DeleteAcls => call!(acls::delete_acls),
        other => Response::Close(format!("unsupported request {other:?}")),
    };
    acls::postfilter(shard, &ctx, response)
}
