//! The broker's global allocator: the system allocator, except that a request of
//! [`HUGE_ALLOCATION_BYTES`] or more is served by an `mmap` with `MAP_NORESERVE`.
//!
//! Why: `kafka-protocol` 0.18 decodes an array by reading its element count off the wire
//! and calling `Vec::with_capacity(count)` before it decodes a single element. A request of
//! ~150 bytes declaring two billion Fetch topics asks for ~400 GB; the system allocator
//! refuses, and Rust aborts the process on a failed allocation — one packet from any
//! client would kill the broker. (Found by `tests/fuzz`, target `request`; fixed upstream
//! only in open pull requests at the time of writing.) With `MAP_NORESERVE` the kernel
//! reserves address space only (under the default heuristic overcommit policy), the decoder
//! runs out of input after a few elements and returns an error, and the mapping is freed
//! untouched: nothing is committed but what the request really carries, which the frame
//! size limit bounds.
//!
//! Nothing in the broker allocates that much in one piece on purpose: frames are bounded
//! by `--max-frame-bytes` (at most 2 GiB) and fetch responses by `--fetch-max-bytes`.
//! Under `vm.overcommit_memory = 2` the mapping fails like any other allocation would.

use std::alloc::{GlobalAlloc, Layout, System};

/// Allocations at least this large get address space only, committed on first touch.
pub const HUGE_ALLOCATION_BYTES: usize = 4 << 30;
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
        ptr.cast()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
