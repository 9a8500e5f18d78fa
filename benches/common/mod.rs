//! What the benches share: record batches built with the library's own builder
//! (`strand::protocol::records`), the same encoder the tests and strand-bench use.

use bytes::Bytes;
use strand::protocol::records::{BatchBuilder, ProducerFields};

/// An uncompressed batch of `count` records with `value_bytes`-byte values, no keys.
pub fn batch(count: usize, value_bytes: usize) -> Bytes {
    let value: Vec<u8> = (0..value_bytes).map(|i| b'a' + (i % 26) as u8).collect();
    let mut builder = BatchBuilder::new(1_700_000_000_000, count * (value_bytes + 8));
    for _ in 0..count {
        builder.push(0, None, Some(&value), Vec::new());
    }
    let batch = builder.finish(0, 0, ProducerFields::NONE);
    Bytes::from(batch.expect("an uncompressed batch cannot fail"))
}
