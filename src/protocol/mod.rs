//! What the `kafka-protocol` crate does not do for us.
//!
//! - [`codec`]: request framing (length prefix, header) and response encoding.
//! - [`versions`]: the API versions this broker negotiates (mirrored in docs/protocol.md).
//! - [`batch`]: a zero-copy view of the magic-2 record batch header and its validation;
//!   records stay opaque bytes on the hot path.
//! - [`errors`]: Kafka error codes by name.
//! - [`alloc_guard`]: the global allocator, which keeps a forged array count in a request
//!   from aborting the process.

pub mod alloc_guard;
pub mod batch;
pub mod codec;
pub mod errors;
pub mod versions;
