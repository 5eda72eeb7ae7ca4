//! A global allocator that keeps large freed blocks for reuse.
//!
//! An evaluation of a large cell allocates tens of megabytes that live for
//! one call: the neighbour list (32 bytes per pair), the per-chunk force
//! accumulators, the outputs. The system allocator hands blocks this large
//! to the kernel and back (`mmap`/`munmap`), so every call touches fresh
//! pages, one page fault per 4 KiB; on a virtual machine the faults of two
//! threads also contend for the same locks. For a 32768-atom CrN cell that
//! was a third of the neighbour search's CPU time.
//!
//! [`LargeBlockCache`] serves blocks of at least [`MIN_BLOCK`] bytes from a
//! small list of freed blocks (best fit, at most 25 % larger than asked),
//! and puts freed ones back while the list holds less than its budget
//! (`MMTP_ALLOC_CACHE_MIB`, default 1024; 0 turns the cache off); smaller
//! blocks go to the system allocator untouched. The list's lock is only
//! ever tried, never waited for: when another thread holds it, the block
//! goes to or comes from the system allocator instead, so the allocator
//! never blocks and a child process forked while the lock was held is not
//! stuck. [`release_cached`] returns every cached block to the system.
//!
//! Each large block carries a 64-byte header with its capacity, so a block
//! can be reused for a smaller request and freed with its true size.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Blocks of at least this many bytes are cached.
pub const MIN_BLOCK: usize = 1 << 17;
const HDR: usize = 64;
const SLOTS: usize = 1024;
const UNSET: usize = usize::MAX;

struct Free {
    /// (base address, capacity in bytes after the header); base 0 = empty slot
    slots: [(usize, usize); SLOTS],
    bytes: usize,
}

static FREE: Mutex<Free> = Mutex::new(Free { slots: [(0, 0); SLOTS], bytes: 0 });
static BUDGET: AtomicUsize = AtomicUsize::new(UNSET);

fn budget() -> usize {
    let b = BUDGET.load(Ordering::Relaxed);
    if b != UNSET {
        return b;
    }
    // read once; reading the environment allocates only small blocks
    let mib = std::env::var("MMTP_ALLOC_CACHE_MIB").ok().and_then(|s| s.trim().parse::<usize>().ok()).unwrap_or(1024);
    let b = mib.saturating_mul(1 << 20);
    BUDGET.store(b, Ordering::Relaxed);
    b
}

/// The caching allocator (see the module documentation).
pub struct LargeBlockCache;

fn large(layout: &Layout) -> bool {
    layout.size() >= MIN_BLOCK && layout.align() <= HDR
}

/// A fresh block from the system with room for `cap` bytes after the header.
unsafe fn fresh(cap: usize, zeroed: bool) -> *mut u8 {
    let Ok(l) = Layout::from_size_align(cap + HDR, HDR) else { return std::ptr::null_mut() };
    let base = if zeroed { System.alloc_zeroed(l) } else { System.alloc(l) };
    if base.is_null() {
        return base;
    }
    (base as *mut usize).write(cap);
    base.add(HDR)
}

unsafe fn capacity(ptr: *mut u8) -> usize {
    (ptr.sub(HDR) as *const usize).read()
}

unsafe fn release(ptr: *mut u8) {
    let cap = capacity(ptr);
    System.dealloc(ptr.sub(HDR), Layout::from_size_align_unchecked(cap + HDR, HDR));
}

/// A cached block of at least `size` bytes, if one fits.
fn take(size: usize) -> Option<*mut u8> {
    let mut g = FREE.try_lock().ok()?;
    let mut best: Option<usize> = None;
    for (k, &(base, cap)) in g.slots.iter().enumerate() {
        if base != 0 && cap >= size && cap - size <= size / 4 && best.is_none_or(|b| cap < g.slots[b].1) {
            best = Some(k);
        }
    }
    let k = best?;
    let (base, cap) = g.slots[k];
    g.slots[k] = (0, 0);
    g.bytes -= cap;
    Some((base + HDR) as *mut u8)
}

/// Keep a freed block if the budget allows; false when it must go to the system.
fn keep(ptr: *mut u8, cap: usize) -> bool {
    let Ok(mut g) = FREE.try_lock() else { return false };
    if g.bytes + cap > budget() {
        return false;
    }
    let Some(k) = g.slots.iter().position(|s| s.0 == 0) else { return false };
    g.slots[k] = (ptr as usize - HDR, cap);
    g.bytes += cap;
    true
}

/// Return every cached block to the system; the bytes released.
pub fn release_cached() -> usize {
    let taken: Vec<(usize, usize)> = {
        let Ok(mut g) = FREE.lock() else { return 0 };
        let t = g.slots.iter().copied().filter(|s| s.0 != 0).collect();
        g.slots = [(0, 0); SLOTS];
        g.bytes = 0;
        t
    };
    let mut n = 0;
    for (base, cap) in taken {
        // SAFETY: the block came from `fresh` and is no longer listed
        unsafe { release((base + HDR) as *mut u8) };
        n += cap;
    }
    n
}

/// Bytes held in the cache now.
pub fn cached_bytes() -> usize {
    FREE.try_lock().map(|g| g.bytes).unwrap_or(0)
}

unsafe impl GlobalAlloc for LargeBlockCache {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !large(&layout) {
            return System.alloc(layout);
        }
        if let Some(p) = take(layout.size()) {
            return p;
        }
        fresh(layout.size(), false)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !large(&layout) {
            return System.alloc_zeroed(layout);
        }
        if let Some(p) = take(layout.size()) {
            p.write_bytes(0, layout.size());
            return p;
        }
        fresh(layout.size(), true)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if !large(&layout) {
            return System.dealloc(ptr, layout);
        }
        let cap = capacity(ptr);
        if !keep(ptr, cap) {
            release(ptr);
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
        match (large(&layout), large(&new_layout)) {
            (false, false) => System.realloc(ptr, layout, new_size),
            (true, true) if capacity(ptr) >= new_size => ptr,
            _ => {
                let q = self.alloc(new_layout);
                if !q.is_null() {
                    std::ptr::copy_nonoverlapping(ptr, q, layout.size().min(new_size));
                    self.dealloc(ptr, layout);
                }
                q
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_reused_resized_and_released() {
        let a = LargeBlockCache;
        unsafe {
            let l = Layout::from_size_align(3 << 20, 8).unwrap();
            let p = a.alloc(l);
            assert!(!p.is_null());
            p.write_bytes(7, l.size());
            a.dealloc(p, l);
            // a slightly smaller request reuses the same block; zeroed means zeroed
            let l2 = Layout::from_size_align((3 << 20) - 4096, 16).unwrap();
            let q = a.alloc_zeroed(l2);
            assert_eq!(q, p);
            assert!(std::slice::from_raw_parts(q, l2.size()).iter().all(|&b| b == 0));
            // growing within the capacity keeps the block, beyond it moves and copies
            q.write_bytes(3, l2.size());
            let r = a.realloc(q, l2, 3 << 20);
            assert_eq!(r, q);
            let l3 = Layout::from_size_align(3 << 20, 16).unwrap();
            let s = a.realloc(r, l3, 8 << 20);
            assert!(std::slice::from_raw_parts(s, l2.size()).iter().all(|&b| b == 3));
            // shrinking below the threshold hands the data to the system allocator
            let t = a.realloc(s, Layout::from_size_align(8 << 20, 16).unwrap(), 1000);
            assert!(std::slice::from_raw_parts(t, 1000).iter().all(|&b| b == 3));
            a.dealloc(t, Layout::from_size_align(1000, 16).unwrap());
            // a much smaller large request does not take a big block (25 % rule)
            let big = a.alloc(Layout::from_size_align(8 << 20, 8).unwrap());
            a.dealloc(big, Layout::from_size_align(8 << 20, 8).unwrap());
            let small = a.alloc(Layout::from_size_align(2 << 20, 8).unwrap()); // (MIN_BLOCK is smaller)
            assert_ne!(small, big);
            a.dealloc(small, Layout::from_size_align(2 << 20, 8).unwrap());
            assert!(cached_bytes() > 0);
            assert!(release_cached() >= (8 << 20));
            assert_eq!(cached_bytes(), 0);
        }
    }
}
