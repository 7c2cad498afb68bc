//! The allocator of iomt's binaries, and the one setting that keeps the service's resident
//! memory down.
//!
//! # Why mimalloc, and why this setting
//! The service allocates from many threads (tokio workers, the blocking pool, the local
//! store's builder and checkpoint threads), where glibc's allocator keeps per-thread arenas and
//! returns little memory. mimalloc returns freed memory to the system ("purges" it), but its
//! version 3 waits 1 s before doing so. A batch of the pipeline allocates and frees tens of
//! megabytes in well under a second, on whichever blocking thread ran it, so with that delay
//! the freed memory of the last few batches stays resident: the service benchmark measured
//! 180–200 MiB resident with the default and 135–150 MiB with a 10 ms delay (mimalloc 2's
//! default), at the same throughput (`iomt-runtime`'s `benches/service.rs`).
//! mimalloc 2 itself was tried too: it kept over 280 MiB.
//!
//! # What must hold
//! * [`configure`] is called at the start of `main`, before the threads that allocate most are
//!   started (it is also correct later: mimalloc reads the option each time it schedules a
//!   purge).
//! * This crate is the only place with `unsafe` code in the workspace (`unsafe_code` is
//!   `forbid` everywhere else).

/// The allocator to install with `#[global_allocator]`.
pub use mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc's `mi_option_e` (mimalloc.h; `libmimalloc-sys` does not
/// name it). The test below checks that this index holds the purge delay's default.
const PURGE_DELAY_OPTION: libmimalloc_sys::mi_option_t = 15;

/// How long mimalloc keeps freed memory before returning it to the system.
pub const PURGE_DELAY_MS: std::ffi::c_long = 10;

/// Sets mimalloc's purge delay to [`PURGE_DELAY_MS`] (see the module docs).
pub fn configure() {
    #[allow(unsafe_code)]
    // SAFETY: `mi_option_set` takes an option index and a value, writes one word of mimalloc's
    // option table and is documented as callable at any time from any thread; the index is
    // checked by the test below.
    unsafe {
        libmimalloc_sys::mi_option_set(PURGE_DELAY_OPTION, PURGE_DELAY_MS);
    }
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

    #[test]
    fn the_option_is_the_purge_delay_and_is_set() {
        // mimalloc 3's defaults: purge_delay 1000 ms; its neighbours (a deprecated option and
        // use_numa_nodes) are 1 and 0, so a shifted index would not read 1000.
        assert_eq!(
            purge_delay_ms(),
            1000,
            "index 15 is not mimalloc's purge delay"
        );
        configure();
        assert_eq!(purge_delay_ms(), PURGE_DELAY_MS);
    }
}
