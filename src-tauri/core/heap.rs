//! How the daemon keeps its heap small (glibc's malloc; elsewhere these do nothing).
//!
//! The daemon's long-lived data is small (well under a megabyte of live heap with hundreds of
//! instances seen come and go); what grows its resident memory is the high-water mark of
//! short-lived peaks (the whole process table read once a minute, command lines and all) left
//! scattered through the heap, where malloc keeps the pages of freed chunks it cannot return
//! from the heap's top.

/// One malloc arena for every thread. glibc gives a thread that finds the heap locked an arena
/// of its own (up to eight per core), and every arena keeps its high-water mark: on a busy
/// machine the daemon had seven and 4.7-4.9 MiB of anonymous memory through a churn of
/// instances, 1.8-2.3 MiB with one arena.
/// Its threads seldom allocate at the same moment, so one arena costs no waiting worth measuring.
/// Call it first thing, before any thread starts.
pub fn one_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: sets one of malloc's parameters, before this program starts any thread.
    #[allow(unsafe_code)]
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Hands the pages of the heap's free chunks back to the system (their addresses stay the
/// heap's; touched again, a page comes back zeroed). Call it after a peak, off the async
/// threads: it walks the heap's free chunks.
pub fn give_back() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes the arena's lock like any allocation; it frees nothing in use.
    #[allow(unsafe_code)]
    unsafe {
        libc::malloc_trim(0);
    }
}
