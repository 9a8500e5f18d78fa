//! What the `kafka-protocol` crate does not do for us.
//!
//! - [`codec`]: request framing (length prefix, header) and response encoding.
//! - [`versions`]: the API versions this broker negotiates (mirrored in docs/protocol.md).
//! - [`batch`]: a zero-copy view of the magic-2 record batch header and its validation;
//!   records stay opaque bytes on the hot path.
//! - [`records`]: what lies inside a batch: varints, the record framing, the compression
//!   codecs (bounded decompression) and a batch builder, shared by the broker, the tests,
//!   the benches and strand-bench.
//! - [`errors`]: Kafka error codes by name.
//! - [`pieces`] and [`fetch_encode`]: responses as pieces written in order, so that a Fetch
//!   response's record bytes reach the socket without a copy.
//! - [`rpc`]: the frames nodes of a cluster exchange (Raft messages, requests, leadership),
//!   encoded to pieces and decoded zero-copy from one buffer.
//! - [`alloc_guard`]: the global allocator, which keeps a forged array count in a request
//!   from aborting the process.

pub mod alloc_guard;
pub mod batch;
pub mod codec;
pub mod errors;
pub mod fetch_encode;
pub mod pieces;
pub mod records;
pub mod rpc;
pub mod versions;
