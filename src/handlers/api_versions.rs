//! ApiVersions: the versions table from [`crate::protocol::versions`].
//!
//! A request of a version we do not know is answered in the v0 format with
//! UNSUPPORTED_VERSION and our table: librdkafka and franz-go parse it that way and retry
//! with a version we support.

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::ApiVersionsResponse;

use super::{Ctx, Response};
use crate::protocol::codec;
use crate::protocol::errors::{NONE, UNSUPPORTED_VERSION};
use crate::protocol::versions::{self, SUPPORTED};

pub fn handle(ctx: &Ctx) -> Response {
    let mut response = ApiVersionsResponse::default();
    response.api_keys = SUPPORTED
        .iter()
        .map(|&(api, min, max)| {
            ApiVersion::default()
                .with_api_key(api as i16)
                .with_min_version(min)
                .with_max_version(max)
        })
        .collect();
    if versions::is_supported(ctx.api, ctx.version) {
        response.error_code = NONE;
        ctx.respond(&response)
    } else {
        response.error_code = UNSUPPORTED_VERSION;
        match codec::encode_response(ctx.correlation_id, ctx.api, 0, &response) {
            Ok(bytes) => Response::Bytes(bytes),
            Err(err) => Response::Close(format!("cannot encode ApiVersions v0: {err}")),
        }
    }
}
