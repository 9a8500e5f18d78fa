//! Batch validation on the produce path: the CRC32C over a zero-copy view of the 61-byte
//! header, plus the header checks (`validate_produce_records`), for small and large
//! batches. Records are never decoded, so the cost should be the CRC's: bytes/s.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use strand::protocol::batch::validate_produce_records;

mod common;

use common::batch;

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
