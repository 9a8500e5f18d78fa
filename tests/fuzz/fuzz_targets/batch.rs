//! Record batch validation on arbitrary bytes: the produce-path check
//! (`validate_produce_records`), the walk recovery and reads use over a segment
//! (`iter_batches`), and the record-framing decode ListOffsets uses (`record_timestamps`).
//! Besides never panicking, what they accept must be self-consistent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strand::protocol::batch::{self, BATCH_HEADER_LEN};

fuzz_target!(|data: &[u8]| {
    // A small limit too, so the size check is reached.
    for max in [1024 * 1024 + 12, 200] {
        if let Ok(info) = batch::validate_produce_records(data, max) {
            assert_eq!(info.len, data.len());
            assert!(info.len <= max && info.len >= BATCH_HEADER_LEN);
            assert!(!info.is_control());
        }
    }
    let mut end = 0;
    for item in batch::iter_batches(data) {
        match item {
            Ok((at, info)) => {
                assert_eq!(at, end, "batches are contiguous");
                assert!(info.len >= BATCH_HEADER_LEN && at + info.len <= data.len());
                assert!(info.record_count > 0);
                // Compacted batches keep their offset range with fewer records in it.
                assert!(i64::from(info.record_count) <= i64::from(info.last_offset_delta) + 1);
                // Pair assertion: a batch accepted in a walk parses the same on its own.
                assert_eq!(batch::parse_batch(&data[at..at + info.len]), Ok(info));
                if let Some(records) = batch::record_timestamps(&data[at..at + info.len]) {
                    assert_eq!(records.len(), info.record_count as usize);
                }
                end = at + info.len;
            }
            Err(_) => break,
        }
    }
});
