//! Dropping this process's mappings of clean file pages (`madvise(MADV_DONTNEED)`): nix offers
//! it only as an `unsafe fn`, behind a feature the kubelet does not otherwise need.

/// Unmaps the pages of `[start, start + len)` from this process; they stay in the page cache.
///
/// The caller names only a range of one private, read-only, file-backed mapping that holds no
/// anonymous (copied-on-write) page, as `/proc/self/smaps` reported it: then the next access
/// maps the very same file contents again, as after the kernel reclaimed the pages itself.
pub(crate) fn drop_clean_file_pages(start: usize, len: usize) -> nix::Result<()> {
    // SAFETY: per this function's contract the range is one read-only private file mapping
    // without anonymous pages, so nothing in it was ever written by this process: MADV_DONTNEED
    // only removes page-table entries and later reads fault the identical file pages back in
    // (exactly what reclaim of clean page-cache pages does). Nothing can write to it meanwhile
    // (it is not writable), and no Rust reference observes a change, because there is none.
    let rc = unsafe { libc::madvise(start as *mut libc::c_void, len, libc::MADV_DONTNEED) };
    nix::errno::Errno::result(rc).map(drop)
}

/// Gives the allocator's free memory back to the kernel (glibc's `malloc_trim(0)`): a shim's
/// heap is small, and what a request needed for a moment would otherwise stay resident.
pub(crate) fn release_free_heap() {
    // SAFETY: malloc_trim takes no pointer and has no precondition; glibc's allocator locks
    // each arena while it trims it, so it is safe beside allocations on other threads.
    #[cfg(target_env = "gnu")]
    unsafe {
        libc::malloc_trim(0);
    }
}
