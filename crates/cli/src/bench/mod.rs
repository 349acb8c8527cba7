//! `tally bench`: throughput, latency, statements per event and memory of the inventory engine,
//! on the embedded stack ([`embedded`]) or on Kafka + PostgreSQL + Redis ([`kafka`]). Both read
//! their arguments and report their results through [`args`]; neither imports the other.

pub mod args;
pub mod embedded;
pub mod forecast;
pub mod fraud;
pub mod kafka;

pub use args::{BenchStack, InventoryBenchArgs};

/// Runs the inventory benchmark on the stack `args` names.
pub async fn inventory(base: tally_config::Config, args: InventoryBenchArgs) -> anyhow::Result<()> {
    match args.stack {
        BenchStack::Embedded => embedded::run(base, args).await,
        BenchStack::Kafka => kafka::run(base, &args).await,
    }
}
