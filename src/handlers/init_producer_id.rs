//! InitProducerId. For idempotent producers: a fresh producer id (epoch 0) from the
//! controller, which reserves ids durably so none is handed out twice across restarts.
//! With a transactional id the transaction coordinator answers (see [`crate::shard::txn`]).

use std::rc::Rc;

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use super::{Ctx, Response};
use crate::cluster::controller::{ControlReply, ControlRequest};
use crate::protocol::errors::*;
use crate::shard::txn::{init_producer, InitTxnProducer};
use crate::shard::Shard;

pub async fn handle(shard: &Rc<Shard>, ctx: &Ctx, request: InitProducerIdRequest) -> Response {
    let mut response = InitProducerIdResponse::default()
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    if let Some(txn) = &request.transactional_id {
        let init = InitTxnProducer {
            transactional_id: txn.0.as_str(),
            transaction_timeout_ms: request.transaction_timeout_ms,
            producer_id: request.producer_id.0,
            producer_epoch: request.producer_epoch,
            version: ctx.version,
        };
        match init_producer(shard, init).await {
            Ok(granted) => {
                response.producer_id = ProducerId(granted.producer_id);
                response.producer_epoch = granted.epoch;
            }
            Err(code) => response.error_code = code,
        }
        return ctx.respond(&response);
    }
    match shard.control(ControlRequest::AllocateProducerId).await {
        Ok(ControlReply::ProducerId(Ok(id))) => {
            response.producer_id = ProducerId(id);
            response.producer_epoch = 0;
        }
        Ok(ControlReply::ProducerId(Err(code))) => response.error_code = code,
        Ok(_) | Err(_) => response.error_code = UNKNOWN_SERVER_ERROR,
    }
    ctx.respond(&response)
}
