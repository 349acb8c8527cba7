//! The `tally` binary: parses the command line and hands over to the library.

use clap::Parser;

// The engine allocates many short-lived buffers per batch; glibc's malloc returned large ones
// to the kernel and page-faulted them back in (12 % of CPU in the inventory benchmark).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    tally_cli::run(tally_cli::Cli::parse())
}
