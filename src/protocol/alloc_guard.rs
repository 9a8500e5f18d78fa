//! The broker's global allocator: the system allocator, except that a request of
//! [`HUGE_ALLOCATION_BYTES`] or more is served by an `mmap` with `MAP_NORESERVE`.
//!
//! Why: `kafka-protocol` 0.18 decodes an array by reading its element count off the wire
//! and calling `Vec::with_capacity(count)` before it decodes a single element. A request of
//! ~150 bytes declaring two billion Fetch topics asks for ~400 GB; the system allocator
//! refuses, and Rust aborts the process on a failed allocation — one packet from any
//! client would kill the broker. (Found by `tests/fuzz`, target `request`; fixed upstream
//! only in open pull requests at the time of writing. Kafka itself caps the initial
//! capacity of a decoded array at 1,000 since 4.4.) With `MAP_NORESERVE` the kernel
//! reserves address space only (under the default heuristic overcommit policy), the decoder
//! runs out of input after a few elements and returns an error, and the mapping is freed
//! untouched: nothing is committed but what the request really carries, which the frame
//! size limit bounds.
//!
//! The threshold is not "too large for this machine" but "large enough that glibc would
//! `mmap` it anyway" (its dynamic mmap threshold never exceeds 32 MiB on 64-bit), so serving
//! these blocks ourselves costs no extra system calls, and a count forged to land *under*
//! some higher threshold cannot slip through: the heuristic refuses one reservation larger
//! than RAM plus swap, so with a 4 GiB threshold a 3 GiB reservation aborted a broker on a
//! 2 GiB machine. Every reservation a client can size is now either below 32 MiB (which no
//! machine that runs the broker refuses) or address space only. Growing such a block is an
//! `mremap`, as glibc does for its own mapped blocks.
//!
//! Under `vm.overcommit_memory = 2` (strict accounting) `MAP_NORESERVE` is ignored and a
//! forged count still fails its allocation; only a decoder that does not reserve from the
//! count closes that case.

use std::alloc::{GlobalAlloc, Layout, System};

/// Allocations at least this large get address space only, committed on first touch:
/// glibc's largest mmap threshold (`DEFAULT_MMAP_THRESHOLD_MAX` on 64-bit).
pub const HUGE_ALLOCATION_BYTES: usize = 32 << 20;
/// `mmap` returns page-aligned memory; larger alignments go to the system allocator.
const PAGE_BYTES: usize = 4096;

pub struct GuardedAllocator;

fn is_huge(layout: &Layout) -> bool {
    layout.size() >= HUGE_ALLOCATION_BYTES && layout.align() <= PAGE_BYTES
}

// SAFETY: every block is served and released by the same mechanism, chosen by its layout
// (which callers must pass back unchanged): `mmap`/`munmap` for huge ones, `System` for
// the rest; `mmap` memory is page-aligned and zero-filled.
unsafe impl GlobalAlloc for GuardedAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if is_huge(&layout) {
            map(layout.size())
        } else {
            System.alloc(layout)
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if is_huge(&layout) {
            map(layout.size())
        } else {
            System.alloc_zeroed(layout)
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if is_huge(&layout) {
            libc::munmap(ptr.cast(), layout.size());
        } else {
            System.dealloc(ptr, layout)
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
        if !is_huge(&layout) && !is_huge(&new_layout) {
            return System.realloc(ptr, layout, new_size);
        }
        if is_huge(&layout) && is_huge(&new_layout) {
            // The mapping keeps its flags (MAP_NORESERVE) and its pages; no copy.
            let moved = libc::mremap(ptr.cast(), layout.size(), new_size, libc::MREMAP_MAYMOVE);
            return if moved == libc::MAP_FAILED {
                std::ptr::null_mut()
            } else {
                moved.cast()
            };
        }
        let new = self.alloc(new_layout);
        if !new.is_null() {
            std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
            self.dealloc(ptr, layout);
        }
        new
    }
}

unsafe fn map(size: usize) -> *mut u8 {
    let ptr = libc::mmap(
        std::ptr::null_mut(),
        size,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
        -1,
        0,
    );
    if ptr == libc::MAP_FAILED {
        std::ptr::null_mut()
    } else {
        #[cfg(test)]
        tests::MAPPED.with(|n| n.set(n.get() + 1));
        ptr.cast()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    thread_local! {
        /// Blocks this thread got as address space only.
        pub static MAPPED: Cell<u64> = const { Cell::new(0) };
    }

    fn mapped() -> u64 {
        MAPPED.with(Cell::get)
    }

    /// A Fetch v4 body whose topic array claims `count` entries and carries none.
    fn forged_fetch_v4(count: i32) -> bytes::Bytes {
        let mut body = Vec::new();
        body.extend_from_slice(&(-1i32).to_be_bytes()); // replica id
        body.extend_from_slice(&0i32.to_be_bytes()); // max wait
        body.extend_from_slice(&0i32.to_be_bytes()); // min bytes
        body.extend_from_slice(&0i32.to_be_bytes()); // max bytes
        body.push(0); // isolation level
        body.extend_from_slice(&count.to_be_bytes());
        bytes::Bytes::from(body)
    }

    #[test]
    fn every_client_sized_reservation_past_the_threshold_is_address_space_only() {
        use kafka_protocol::messages::fetch_request::FetchTopic;
        use kafka_protocol::messages::FetchRequest;
        let topic_bytes = std::mem::size_of::<FetchTopic>();
        // Reservations a forged count makes, from just past the threshold to just under
        // 4 GiB (the old threshold: a 3 GiB one aborted a broker on a 2 GiB machine).
        for reserve_bytes in [HUGE_ALLOCATION_BYTES, 256 << 20, (4usize << 30) - (1 << 20)] {
            let count = reserve_bytes.div_ceil(topic_bytes);
            let Ok(count) = i32::try_from(count) else {
                continue;
            };
            let before = mapped();
            let mut body = forged_fetch_v4(count);
            assert!(crate::protocol::codec::decode_body::<FetchRequest>(&mut body, 4).is_err());
            assert_eq!(
                mapped(),
                before + 1,
                "{reserve_bytes} bytes were reserved for real"
            );
        }
        // Small counts stay with the system allocator.
        let before = mapped();
        let mut body = forged_fetch_v4(1000);
        assert!(crate::protocol::codec::decode_body::<FetchRequest>(&mut body, 4).is_err());
        assert_eq!(mapped(), before);
    }

    #[test]
    fn growing_and_shrinking_mapped_blocks_keeps_their_bytes() {
        let allocator = GuardedAllocator;
        let layout = Layout::from_size_align(HUGE_ALLOCATION_BYTES, 8).unwrap();
        unsafe {
            let ptr = allocator.alloc(layout);
            assert!(!ptr.is_null());
            *ptr = 1;
            *ptr.add(layout.size() - 1) = 2;
            let grown = allocator.realloc(ptr, layout, 4 * HUGE_ALLOCATION_BYTES);
            assert!(!grown.is_null());
            assert_eq!((*grown, *grown.add(layout.size() - 1)), (1, 2));
            let grown_layout = Layout::from_size_align(4 * HUGE_ALLOCATION_BYTES, 8).unwrap();
            let shrunk = allocator.realloc(grown, grown_layout, 64);
            assert_eq!(*shrunk, 1);
            allocator.dealloc(shrunk, Layout::from_size_align(64, 8).unwrap());
        }
    }

    #[test]
    fn huge_blocks_are_address_space_only_and_round_trip() {
        let allocator = GuardedAllocator;
        // 64 GiB: more than this machine has, which the system allocator would refuse.
        let layout = Layout::from_size_align(64 << 30, 8).unwrap();
        unsafe {
            let ptr = allocator.alloc(layout);
            assert!(!ptr.is_null());
            *ptr = 7;
            *ptr.add(layout.size() - 1) = 9;
            let small = Layout::from_size_align(16, 8).unwrap();
            let shrunk = allocator.realloc(ptr, layout, 16);
            assert_eq!((*shrunk, *shrunk.add(1)), (7, 0));
            allocator.dealloc(shrunk, small);
        }
    }
}
