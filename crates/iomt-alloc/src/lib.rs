//! The allocator of iomt's binaries, and the two settings that keep the service's resident
//! memory down.
//!
//! # Why mimalloc, and why these settings
//! The service allocates from many threads (tokio workers, the blocking pool, the local
//! store's builder and checkpoint threads), where glibc's allocator keeps per-thread arenas and
//! returns little memory. mimalloc returns freed memory to the system ("purges" it), but:
//! * Its version 3 waits 1 s before doing so. A batch of the pipeline allocates and frees tens
//!   of megabytes in well under a second, on whichever blocking thread ran it, so with that
//!   delay the freed memory of the last few batches stays resident: the service benchmark
//!   measured 180–200 MiB resident with the default and 135–150 MiB with a 10 ms delay
//!   (mimalloc 2's default), at the same throughput (`iomt-runtime`'s `benches/service.rs`).
//!   mimalloc 2 itself was tried too: it kept over 280 MiB.
//! * It asks for transparent huge pages on its arenas (`madvise(MADV_HUGEPAGE)`). Memory it
//!   purged comes back, when touched again, as a whole 2 MiB page, zeroed and resident even
//!   when only a few kilobytes of it are used: a fifth of the service's page faults, and
//!   ~30 MiB of its peak. With huge pages off for the process (`prctl(PR_SET_THP_DISABLE)`,
//!   as mimalloc itself does when told at start-up) the benchmark peaked at 147–150 MiB
//!   instead of 169–186, at the same throughput.
//!
//! # What must hold
//! * [`configure`] is called at the start of `main`, before the threads that allocate most are
//!   started (it is also correct later: mimalloc reads the purge delay each time it schedules
//!   a purge, and the kernel checks the huge-page flag at each page fault).
//! * This crate is the only place with `unsafe` code in the workspace (`unsafe_code` is
//!   `forbid` everywhere else).

/// The allocator to install with `#[global_allocator]`.
pub use mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc's `mi_option_e` (mimalloc.h; `libmimalloc-sys` does not
/// name it). The test below checks that this index holds the purge delay's default.
const PURGE_DELAY_OPTION: libmimalloc_sys::mi_option_t = 15;

/// `mi_option_allow_thp` in mimalloc's `mi_option_e` (mimalloc.h), checked like
/// [`PURGE_DELAY_OPTION`].
const ALLOW_THP_OPTION: libmimalloc_sys::mi_option_t = 43;

/// How long mimalloc keeps freed memory before returning it to the system.
pub const PURGE_DELAY_MS: std::ffi::c_long = 10;

/// Sets mimalloc's purge delay to [`PURGE_DELAY_MS`] and turns transparent huge pages off for
/// the process (see the module docs).
pub fn configure() {
    #[allow(unsafe_code)]
    // SAFETY: `mi_option_set` takes an option index and a value, writes one word of mimalloc's
    // option table and is documented as callable at any time from any thread; the indices are
    // checked by the test below.
    unsafe {
        libmimalloc_sys::mi_option_set(PURGE_DELAY_OPTION, PURGE_DELAY_MS);
        libmimalloc_sys::mi_option_set(ALLOW_THP_OPTION, 0);
    }
    disable_transparent_huge_pages();
}

/// Sets the process's "THP disable" flag: from now on its page faults map 4 KiB pages only.
/// A kernel without the flag (before Linux 3.15) keeps huge pages; nothing else changes.
#[cfg(target_os = "linux")]
fn disable_transparent_huge_pages() {
    #[allow(unsafe_code)]
    // SAFETY: `prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0)` takes integers only and sets a flag of
    // the process's memory map; it touches no memory of this process.
    unsafe {
        libc::prctl(
            libc::PR_SET_THP_DISABLE,
            1 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn disable_transparent_huge_pages() {}

/// Whether transparent huge pages are off for the process (always `false` off Linux).
pub fn transparent_huge_pages_disabled() -> bool {
    #[cfg(target_os = "linux")]
    {
        #[allow(unsafe_code)]
        // SAFETY: `prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0)` takes integers only and reads a flag.
        let flag = unsafe {
            libc::prctl(
                libc::PR_GET_THP_DISABLE,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
            )
        };
        flag == 1
    }
    #[cfg(not(target_os = "linux"))]
    false
}

/// The purge delay in effect, in milliseconds.
pub fn purge_delay_ms() -> std::ffi::c_long {
    #[allow(unsafe_code)]
    // SAFETY: `mi_option_get` reads one word of mimalloc's option table.
    unsafe {
        libmimalloc_sys::mi_option_get(PURGE_DELAY_OPTION)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allow_thp() -> std::ffi::c_long {
        #[allow(unsafe_code)]
        // SAFETY: `mi_option_get` reads one word of mimalloc's option table.
        unsafe {
            libmimalloc_sys::mi_option_get(ALLOW_THP_OPTION)
        }
    }

    /// One test, as the options are the process's.
    #[test]
    fn the_options_are_the_purge_delay_and_huge_pages_and_are_set() {
        // mimalloc 3's defaults: purge_delay 1000 ms; its neighbours (a deprecated option and
        // use_numa_nodes) are 1 and 0, so a shifted index would not read 1000.
        assert_eq!(
            purge_delay_ms(),
            1000,
            "index 15 is not mimalloc's purge delay"
        );
        // allow_thp 1; its neighbours (page_cross_thread_max_reclaim, minimal_purge_size) are
        // 16 or more and 0.
        assert_eq!(allow_thp(), 1, "index 43 is not mimalloc's allow_thp");
        configure();
        assert_eq!(purge_delay_ms(), PURGE_DELAY_MS);
        assert_eq!(allow_thp(), 0);
        #[cfg(target_os = "linux")]
        assert!(transparent_huge_pages_disabled());
    }
}
