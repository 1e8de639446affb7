//! glibc's `malloc_trim(0)` behind a safe function.
//!
//! glibc's malloc gives freed memory back to the system only from the top of
//! its heap. After a burst (a thousand streams, say) the freed buffers lie
//! below memory still in use, so they stay resident for the life of the
//! process unless something asks for them back. `malloc_trim` walks the
//! heap and returns every free page with `madvise`.
//!
//! This is the only unsafe call in llm-sidecar; it lives in its own crate so
//! that the sidecar itself can forbid unsafe code outright.

/// Returns the allocator's free pages to the system. True when glibc gave
/// some back. Elsewhere (musl, macOS) it does nothing and returns false:
/// those allocators return memory on their own or have no such call.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[must_use]
pub fn release_free_memory() -> bool {
    // SAFETY: malloc_trim takes no pointers and glibc serialises it with
    // every other allocator call; it only unmaps pages no allocation uses.
    #[allow(unsafe_code)]
    unsafe {
        libc::malloc_trim(0) == 1
    }
}

/// Returns the allocator's free pages to the system; a no-op here.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
#[must_use]
pub fn release_free_memory() -> bool {
    false
}

#[cfg(test)]
mod tests {
    #[test]
    fn releases_what_a_burst_left_behind() {
        // Many small blocks, then all but the last freed: the last pins
        // the top of the heap, so only a trim can give the rest back.
        let mut blocks: Vec<Vec<u8>> = (0..20_000).map(|i| vec![i as u8; 1024]).collect();
        let pin = blocks.pop();
        drop(blocks);
        let released = super::release_free_memory();
        drop(pin);
        if cfg!(all(target_os = "linux", target_env = "gnu")) {
            assert!(released, "glibc had 20 MB of free pages to give back");
        }
    }
}
