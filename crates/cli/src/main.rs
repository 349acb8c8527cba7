//! The `tally` binary: parses the command line and hands over to the library.

use clap::Parser;

// The engine allocates many short-lived buffers per batch; glibc's malloc returned large ones
// to the kernel and page-faulted them back in (12 % of CPU in the inventory benchmark).
// mimalloc v3 keeps freed memory for 1 s before returning it (its `purge_delay` default);
// v2's 10 ms (`MIMALLOC_PURGE_DELAY=10`) page-faulted each batch's buffers back in, ~12 % of
// tally's CPU in the Kafka benchmark (docs/benchmarks.md), so the default stays.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    tally_cli::run(tally_cli::Cli::parse())
}
