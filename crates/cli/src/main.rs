//! The `tally` binary: parses the command line and hands over to the library.

use clap::Parser;

// The engine allocates many short-lived buffers per batch; glibc's malloc returned large ones
// to the kernel and page-faulted them back in (12 % of CPU in the inventory benchmark).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How long mimalloc keeps freed memory before returning it to the kernel. Its default, 10 ms,
/// is shorter than the gap between two batches of a busy worker: every batch page-faulted its
/// buffers back in (28k faults/s, ~12 % of tally's CPU in the Kafka benchmark,
/// docs/benchmarks.md). A second still gives memory back soon after a burst.
const ALLOCATOR_PURGE_DELAY_MS: std::ffi::c_long = 1_000;

/// `mi_option_purge_delay` in mimalloc.h's `mi_option_t` (v2 and v3 alike: retired options
/// keep their slots, so the numbering is stable); the Rust binding has no constant for it.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn main() -> std::process::ExitCode {
    // SAFETY: `mi_option_set` only stores an integer in mimalloc's option table (an atomic
    // store); it takes no pointers and is valid at any time, here before any thread starts.
    // A `MIMALLOC_PURGE_DELAY` set in the environment still wins: an operator's tuning stays
    // possible without a rebuild.
    #[allow(unsafe_code)]
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, ALLOCATOR_PURGE_DELAY_MS) };
    }
    tally_cli::run(tally_cli::Cli::parse())
}
