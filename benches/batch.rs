//! Batch validation on the produce path: the CRC32C over a zero-copy view of the 61-byte
//! header, plus the header checks (`validate_produce_records`), for small and large
//! batches. Records are never decoded, so the cost should be the CRC's: bytes/s.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use strand::protocol::batch::validate_produce_records;

#[allow(dead_code, unused_imports)]
#[path = "../tools/strand-bench/batch.rs"]
mod builder;

use builder::{BatchBuilder, Codec, ProducerFields, STAMP_BYTES};

/// A batch of `count` records with `value_bytes`-byte values.
pub fn batch(count: usize, value_bytes: usize) -> bytes::Bytes {
    let filler = builder::filler(value_bytes - STAMP_BYTES);
    let mut b = BatchBuilder::new(1_700_000_000_000, count * (value_bytes + 8));
    for i in 0..count {
        b.push(i as u64, &filler, 1_700_000_000_000);
    }
    b.finish(Codec::None, ProducerFields::NONE)
}

fn validation(c: &mut Criterion) {
    let mut group = c.benchmark_group("batch_validate");
    for (name, count, value) in [
        ("16KiB_100B", 150, 100),
        ("1MB_100B", 9_000, 100),
        ("1MB_1KiB", 950, 1024),
    ] {
        let batch = batch(count, value);
        group.throughput(Throughput::Bytes(batch.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| validate_produce_records(black_box(&batch), 1 << 21).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, validation);
criterion_main!(benches);
