//! The `tally` binary: parses the command line and hands over to the library.

use clap::Parser;

fn main() -> std::process::ExitCode {
    tally_cli::run(tally_cli::Cli::parse())
}
