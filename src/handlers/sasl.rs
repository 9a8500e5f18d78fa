//! SaslHandshake and SaslAuthenticate as they reach the handlers: on a listener without
//! SASL, or after a connection has authenticated (no re-authentication yet). Before
//! authentication on a SASL listener the connection answers them itself
//! (`server::connection`). As in Kafka, both get ILLEGAL_SASL_STATE here.

use std::rc::Rc;

use kafka_protocol::messages::{
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};

use super::{s, Ctx, Response};
use crate::protocol::errors::ILLEGAL_SASL_STATE;
use crate::shard::Shard;

pub async fn handshake(_shard: &Rc<Shard>, ctx: &Ctx, _request: SaslHandshakeRequest) -> Response {
    ctx.respond(&SaslHandshakeResponse::default().with_error_code(ILLEGAL_SASL_STATE))
}

pub async fn authenticate(
    _shard: &Rc<Shard>,
    ctx: &Ctx,
    _request: SaslAuthenticateRequest,
) -> Response {
    ctx.respond(
        &SaslAuthenticateResponse::default()
            .with_error_code(ILLEGAL_SASL_STATE)
            .with_error_message(Some(s(
                "SASL authentication is not expected on this connection (not a SASL listener, or already authenticated)",
            ))),
    )
}
